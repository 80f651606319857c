"""A small per-request DataLoader: keys asked for in one event-loop tick load in one batch.

Kept in the data layer (which never imports strawberry) and deliberately minimal: the
batch function receives unique keys and returns one value per key, in order.

`batch_observer`, when set for the current request, is told the size of every batch
(metrics); unset, dispatching costs one context-variable read. Each batch runs as a task
of its own, counted as work of the request that asked for it (`models.db.RequestWork`),
so a batch whose result nobody awaits any more (its field was nulled by a sibling's error)
still finishes, or is cancelled, before that request answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Generic, TypeVar, overload

from models.db import track_request_task

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class cached_property(Generic[T]):
    """`functools.cached_property` without its lock (Python 3.12 dropped it too): the
    loaders and their containers are made per request, one attribute each the first time
    it is read, and 3.11's lock made that first read cost three times as much. A
    non-data descriptor: once set, the instance's own attribute answers."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


# (loader name, keys in the batch); set per request by models.telemetry.activate.
batch_observer: ContextVar[Callable[[str, int], None] | None] = ContextVar(
    "shopql_batch_observer", default=None
)


class DataLoader(Generic[K, V]):
    __slots__ = ("_batch_fn", "_cache", "_max_batch_size", "_name", "_queue", "_tasks")

    def __init__(
        self,
        batch_fn: Callable[[list[K]], Awaitable[Sequence[V]]],
        *,
        max_batch_size: int = 500,
        name: str | None = None,
    ) -> None:
        self._batch_fn = batch_fn
        self._max_batch_size = max_batch_size
        self._name = name
        self._cache: dict[K, asyncio.Future[V]] = {}
        self._queue: list[K] = []
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while running

    def load(self, key: K) -> asyncio.Future[V]:
        future = self._cache.get(key)
        if future is not None:
            return future
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._cache[key] = future
        if not self._queue:
            loop.call_soon(self._dispatch)
        self._queue.append(key)
        return future

    def load_many(self, keys: Sequence[K]) -> asyncio.Future[list[V]]:
        return asyncio.gather(*(self.load(key) for key in keys))

    def prime(self, key: K, value: V) -> None:
        """Seed the cache with a value fetched by another query (no SQL)."""
        if key not in self._cache:
            future = asyncio.get_running_loop().create_future()
            future.set_result(value)
            self._cache[key] = future

    @property
    def name(self) -> str:
        """The name given, else the batch function's qualified name (metrics label)."""
        if self._name is None:
            qualname = getattr(self._batch_fn, "__qualname__", "loader")
            self._name = qualname.replace("<locals>.", "")
        return self._name

    def _dispatch(self) -> None:
        queue, self._queue = self._queue, []
        size = self._max_batch_size
        observe = batch_observer.get()
        for start in range(0, len(queue), size):
            batch = queue[start : start + size]
            if observe is not None:
                observe(self.name, len(batch))
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            track_request_task(task)

    async def _run(self, keys: list[K]) -> None:
        try:
            values = await self._batch_fn(keys)
            if len(values) != len(keys):
                raise RuntimeError(
                    f"batch function returned {len(values)} values for {len(keys)} keys"
                )
        except BaseException as exc:
            for key in keys:
                future = self._cache.pop(key)
                if not future.done():
                    future.set_exception(exc)
                    # The error reaches the resolver that awaits it; a future nobody
                    # awaits any more (its field already failed) must not warn at GC.
                    future.exception()
            if not isinstance(exc, Exception):
                raise
            return
        for key, value in zip(keys, values, strict=True):
            future = self._cache[key]
            if not future.done():
                future.set_result(value)


def keyed_loader(
    fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], *, allowed: bool = True
) -> DataLoader[K, V | None]:
    """A loader whose batch is one `fetch(keys) -> {key: value}`; a missing key is None.
    Not `allowed` (the viewer lacks the permission): every key is None, nothing fetched."""

    async def batch(keys: list[K]) -> list[V | None]:
        if not allowed:
            return [None] * len(keys)
        found = await fetch(keys)
        return [found.get(key) for key in keys]

    return DataLoader(batch)
