"""The per-request DataLoader: one batch per event-loop tick, cached, errors delivered."""

from __future__ import annotations

import asyncio

import pytest

from models.dataloader import DataLoader


async def test_keys_asked_for_together_load_in_one_batch_once_each() -> None:
    batches: list[list[int]] = []

    async def fetch(keys: list[int]) -> list[str]:
        batches.append(keys)
        return [f"v{k}" for k in keys]

    loader: DataLoader[int, str] = DataLoader(fetch)
    values = await asyncio.gather(*(loader.load(k) for k in [3, 1, 3, 2, 1]))
    assert values == ["v3", "v1", "v3", "v2", "v1"]
    assert batches == [[3, 1, 2]]
    # Cached for the rest of the request: no second batch.
    assert await loader.load(2) == "v2"
    assert await loader.load_many([1, 4]) == ["v1", "v4"]
    assert batches == [[3, 1, 2], [4]]


async def test_max_batch_size_splits_batches() -> None:
    sizes: list[int] = []

    async def fetch(keys: list[int]) -> list[int]:
        sizes.append(len(keys))
        return keys

    loader: DataLoader[int, int] = DataLoader(fetch, max_batch_size=4)
    assert await loader.load_many(list(range(10))) == list(range(10))
    assert sizes == [4, 4, 2]


async def test_a_failing_batch_fails_its_keys_and_is_not_cached() -> None:
    calls = 0

    async def fetch(keys: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LookupError("database went away")
        return keys

    loader: DataLoader[int, int] = DataLoader(fetch)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert await loader.load(1) == 1  # retried, not served from a cached failure


async def test_a_wrong_number_of_values_is_an_error() -> None:
    async def fetch(keys: list[int]) -> list[int]:
        return keys[:-1]

    loader: DataLoader[int, int] = DataLoader(fetch)
    with pytest.raises(RuntimeError, match="2 values for 3 keys"):
        await loader.load_many([1, 2, 3])


async def test_prime_serves_without_a_batch() -> None:
    async def fetch(keys: list[int]) -> list[int]:
        raise AssertionError("no batch expected")

    loader: DataLoader[int, int] = DataLoader(fetch)
    loader.prime(7, 70)
    assert await loader.load(7) == 70
