"""A request answers only once nothing it started still runs: no DataLoader batch, no field
graphql-core stopped waiting for, no connection checked out of the pool.

The shape that used to leak: a non-null root field fails (`nodes(ids:)` with an ID that
does not decode, so `data` is null) while a sibling's DataLoader batch is still reading.
graphql-core cancels the sibling field, but the batch is a task of its own: it went on
reading after the response, holding a pooled connection, and was reclaimed by the garbage
collector ("The garbage collector is trying to clean up non-checked-in connection") when
the pool was disposed of first. Reads are made slow here (the connection is held for
`READ_DELAY` seconds) so the sibling is reliably still reading when the error lands.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import make_client
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import Database, RequestWork, track_request_task

READ_DELAY = 0.3


class SlowReads(Database):
    """Every read connection is held `delay` seconds before it is used; counts reads."""

    def __init__(self, url: str, *, delay: float) -> None:
        super().__init__(url)
        self.delay = delay
        self.reads_started = 0
        self.reads_finished = 0

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with super().read() as conn:
            self.reads_started += 1
            try:
                await asyncio.sleep(self.delay)
                yield conn
            finally:
                self.reads_finished += 1


@pytest.fixture
async def slow_db(catalog_url: str) -> AsyncIterator[SlowReads]:
    db = SlowReads(catalog_url, delay=READ_DELAY)
    yield db
    await db.dispose()


def _gid(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


async def _post(db: Database, query: str) -> tuple[dict[str, Any], set[asyncio.Task[Any]]]:
    """The response body, and the tasks the request left running when it answered."""
    async with make_client(db) as client:
        before = asyncio.all_tasks()
        response = await client.post("/graphql", json={"query": query})
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert response.status_code == 200, response.text
    return response.json(), left


def _codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


async def test_failing_root_field_leaves_no_batch_or_connection_behind(slow_db: SlowReads) -> None:
    # `node` asks its loader for a category (a batch task starts reading), `nodes` fails
    # on its first step: `[Node]!` is non-null, so `data` is null and `node` is cancelled.
    query = f'{{ node(id: "{_gid("Category", 1)}") {{ id }} nodes(ids: ["not an ID"]) {{ id }} }}'
    body, left = await _post(slow_db, query)

    assert body["data"] is None
    assert _codes(body) == ["BAD_USER_INPUT"]
    assert left == set(), f"the request left tasks running: {left}"
    assert slow_db.checked_out() == 0
    assert slow_db.reads_started >= 1, "the sibling's batch never read: not the leaking shape"
    assert slow_db.reads_finished == slow_db.reads_started


async def test_failing_root_field_with_many_slow_siblings(slow_db: SlowReads) -> None:
    """Root resolvers reading themselves (cancelled by graphql-core) and nested loader
    batches (tasks of their own), many at once: all settled before the answer."""
    siblings = " ".join(
        f'n{i}: node(id: "{_gid("Product", i + 1)}") {{ id ... on Product {{ category {{ name }} }} }}'
        for i in range(6)
    )
    query = (
        f'{{ {siblings} product(slug: "no-such-product") {{ name }} '
        f'categories(first: 3) {{ nodes {{ name }} }} nodes(ids: ["{_gid("Order", 1)}", "x"]) {{ id }} }}'
    )
    body, left = await _post(slow_db, query)

    assert body["data"] is None
    assert _codes(body) == ["BAD_USER_INPUT"]
    assert left == set(), f"the request left tasks running: {left}"
    assert slow_db.checked_out() == 0
    assert slow_db.reads_finished == slow_db.reads_started


async def test_the_wait_for_leftover_work_is_bounded(catalog_url: str) -> None:
    """Leftover reads slower than the grace are cancelled, not waited for."""
    db = SlowReads(catalog_url, delay=30)
    try:
        query = f'{{ node(id: "{_gid("Category", 1)}") {{ id }} nodes(ids: ["x"]) {{ id }} }}'
        started = time.perf_counter()
        body, left = await _post(db, query)
        elapsed = time.perf_counter() - started
        assert _codes(body) == ["BAD_USER_INPUT"]
        assert elapsed < RequestWork.GRACE + 5, elapsed
        assert left == set()
        assert db.checked_out() == 0
    finally:
        await db.dispose()


async def test_successful_requests_do_not_wait(catalog_db: Database) -> None:
    body, left = await _post(
        catalog_db, "{ products(first: 5) { nodes { name category { name } variants { sku } } } }"
    )
    assert "errors" not in body
    assert len(body["data"]["products"]["nodes"]) == 5
    assert left == set()
    assert catalog_db.checked_out() == 0


async def test_settle_gives_up_on_work_that_ignores_cancellation() -> None:
    """A task that swallows its cancellation is logged and left: the request still answers."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    work = RequestWork()
    task = asyncio.ensure_future(stubborn())
    work.track(task)
    started = time.perf_counter()
    await work.settle(grace=0.05, cancel_timeout=0.1)
    assert time.perf_counter() - started < 1
    assert work.pending == 1
    release.set()
    await task
    assert work.pending == 0


async def test_tasks_outside_a_request_are_not_tracked() -> None:
    task = asyncio.ensure_future(asyncio.sleep(0))
    track_request_task(task)  # no request: nothing to count it in
    await task


async def test_a_read_cancelled_at_any_point_returns_its_connection(catalog_url: str) -> None:
    """Cancelled while checking out (a new connection is opened, and the reader's isolation
    level applied, after the pool has counted it out), executing, or closing: the connection
    goes back to the pool, never to the garbage collector."""
    db = Database(catalog_url, pool_size=2)  # 4 connections, 4 readers; cancelled: new ones

    async def read() -> None:
        async with db.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    try:
        for attempt in range(200):
            tasks = [asyncio.ensure_future(read()) for _ in range(4)]
            await asyncio.sleep((attempt * 7 % 30) * 0.0001)  # cancel at varying points
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert db.checked_out() == 0, f"attempt {attempt}"
    finally:
        await db.dispose()


async def test_a_read_cancelled_while_waiting_for_a_full_pool_returns_nothing_twice(
    catalog_url: str,
) -> None:
    """More readers than the pool holds: some wait for a connection (their
    checkout goes on in a task of its own); cancelled there or later, every connection
    still goes back, and the pool serves reads afterwards."""
    db = Database(catalog_url, pool_size=1)  # 2 connections at most, 5 readers

    async def read() -> None:
        async with db.read() as conn:
            await conn.exec_driver_sql("SELECT 1")
            await asyncio.sleep(0.001)

    try:
        for attempt in range(60):
            tasks = [asyncio.ensure_future(read()) for _ in range(5)]
            await asyncio.sleep((attempt % 12) * 0.0005)
            for task in tasks[attempt % 3 :]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert db.checked_out() == 0, f"attempt {attempt}"
        async with db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await db.dispose()


async def test_a_read_from_a_warm_pool_starts_no_task(catalog_db: Database) -> None:
    """Checking a pooled connection out and back in needs no I/O: both run inline, with no
    task and no trip through the event loop (models.db._start)."""
    async with catalog_db.read() as conn:  # warm: one pooled connection exists
        await conn.exec_driver_sql("SELECT 1")
    created: list[object] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        for _ in range(3):
            async with catalog_db.read() as conn:
                assert conn.closed is False
    finally:
        loop.set_task_factory(previous)
    assert created == []
    assert catalog_db.checked_out() == 0
