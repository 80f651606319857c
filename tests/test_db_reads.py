"""Read connections and the process-level tuning `shopql serve` applies (issue 8).

On SQLite reads come from a pool of their own: autocommit from the connect on and
`query_only`, so a read needs no isolation-level switch or rollback, and a write that slips
onto a read connection fails instead of committing. A server started from the environment
freezes what exists at start-up out of the garbage collector's sight.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import TEST_DATABASE_URL, make_client

import app as app_module
from models.db import BuiltStatements, Database
from models.reads import fetch_first
from models.settings import Settings, SettingsError

_CATEGORY_NAMES = (
    sa.select(sa.column("name"))
    .select_from(sa.table("categories"))
    .where(sa.column("id") == sa.bindparam("id"))
)
LISTING = "{ products(first: 5) { nodes { name variants { sku } category { name } } } }"


@pytest.mark.skipif(bool(TEST_DATABASE_URL), reason="SQLite's read pool")
async def test_a_write_on_a_read_connection_fails_and_changes_nothing(
    catalog_db: Database,
) -> None:
    async with catalog_db.read() as conn:
        before = (await conn.exec_driver_sql("SELECT count(*) FROM categories")).scalar()
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            await conn.exec_driver_sql("DELETE FROM categories")
        after = (await conn.exec_driver_sql("SELECT count(*) FROM categories")).scalar()
    assert before == after and before
    assert catalog_db.checked_out() == 0


async def test_reads_and_writes_share_committed_data_and_return_connections(
    catalog_db: Database,
) -> None:
    """A write committed on the write pool is seen by the next read (no stale snapshot
    held by a pooled read connection), and every connection goes back."""
    async with make_client(catalog_db) as client:
        first = (await client.post("/graphql", json={"query": LISTING})).json()
        name = first["data"]["products"]["nodes"][0]["category"]["name"]
        async with catalog_db.transaction() as conn:
            await conn.execute(
                sa.text("UPDATE categories SET name = :new WHERE name = :old"),
                {"new": name + " (renamed)", "old": name},
            )
        again = (await client.post("/graphql", json={"query": LISTING})).json()
    assert again["data"]["products"]["nodes"][0]["category"]["name"] == name + " (renamed)"
    assert catalog_db.checked_out() == 0


async def test_connections_opened_at_a_peak_are_kept_and_never_exceed_the_cap(
    catalog_url: str,
) -> None:
    """A pool of size N holds up to 2N connections and keeps every one it opened: under
    more concurrent reads than that, the rest wait; a second peak opens nothing new. (With
    overflow connections, each peak closed the connections above N on their return and
    opened them again at the next, a new server process each on PostgreSQL.)"""
    db = Database(catalog_url, pool_size=2)
    engine = db._reader_engine or db.engine
    connects: list[object] = []
    sa.event.listen(engine.sync_engine, "connect", lambda conn, _record: connects.append(conn))
    most = 0

    async def read() -> None:
        nonlocal most
        async with db.read() as conn:
            most = max(most, db.checked_out())
            await conn.exec_driver_sql("SELECT 1")
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(read() for _ in range(6)))
        assert (len(connects), most) == (4, 4)
        await asyncio.gather(*(read() for _ in range(6)))
        assert (len(connects), most) == (4, 4)
        assert db.checked_out() == 0
    finally:
        await db.dispose()


async def test_a_read_connection_is_kept_for_the_next_read(catalog_url: str) -> None:
    """A read hands its connection to the next read (no pool checkout and check-in per
    read, which cost as much CPU as a PostgreSQL statement); it counts as checked out
    only while a read holds it, and `dispose` returns it."""
    db = Database(catalog_url, pool_size=2)
    engine = db._reader_engine or db.engine
    checkouts: list[object] = []
    sa.event.listen(engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
    try:
        for _ in range(10):
            async with db.read() as conn:
                assert db.checked_out() == 1
                assert await fetch_first(conn, _CATEGORY_NAMES, {"id": 1}) is not None
        assert (len(checkouts), db.checked_out()) == (1, 0)
        # 3 at once: 2 (pool_size) stay idle, the third goes back to the pool
        async with db.read(), db.read(), db.read():
            assert db.checked_out() == 3
        assert (len(checkouts), db.checked_out(), len(db._idle_reads)) == (3, 0, 2)
    finally:
        await db.dispose()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_read_connection_that_failed_or_began_a_transaction_is_not_kept(
    catalog_url: str,
) -> None:
    db = Database(catalog_url, pool_size=2)
    try:
        async with db.read() as conn:
            await conn.invalidate()
        assert db._idle_reads == [] and db.checked_out() == 0
        async with db.read() as conn:
            await conn.exec_driver_sql("SELECT 1")  # SQLAlchemy's own execute begins
        assert db._idle_reads == [] and db.checked_out() == 0
        async with db.read() as conn:
            kept = conn
        assert db._idle_reads == [kept]
    finally:
        await db.dispose()


async def test_a_write_takes_back_a_connection_that_reads_keep_idle(catalog_url: str) -> None:
    """On PostgreSQL reads and writes share one pool (2 connections here): with one read
    running and the other connection idle among the reads, a write does not wait for
    the pool's 30-second timeout."""
    db = Database(catalog_url, pool_size=1)

    async def write() -> int:
        async with db.transaction() as conn:
            return int((await conn.exec_driver_sql("SELECT 2")).scalar_one())

    try:
        reading = db.read()
        running = await reading.__aenter__()
        async with db.read():
            pass  # now kept idle: on PostgreSQL the pool itself has nothing left
        writing = asyncio.ensure_future(write())
        done, _ = await asyncio.wait({writing}, timeout=5)
        assert await fetch_first(running, _CATEGORY_NAMES, {"id": 1}) is not None
        await reading.__aexit__(None, None, None)  # lets a waiting write go on
        assert await writing == 2
        assert done, "the write waited for a connection"
        assert db.checked_out() == 0
    finally:
        await db.dispose()


CATEGORY_PAGE = """{ category(slug: "apparel") {
  children(first: 3) { nodes { name } }
  products(first: 4) { nodes { name variants { sku } } pageInfo { hasNextPage } }
} }"""


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL's plan cache")
@pytest.mark.parametrize("query", [LISTING, CATEGORY_PAGE], ids=["listing", "category"])
async def test_page_statements_are_planned_once_on_postgresql(catalog_url: str, query: str) -> None:
    """A page's LIMIT (and the availability subquery's constants) are written into the
    statement, not bound: PostgreSQL then keeps one generic plan for the prepared
    statement instead of planning it again on every request (a bound LIMIT always looks
    worse to it generically)."""
    db = Database(catalog_url, pool_size=2)  # reads keep up to 2 connections idle
    try:
        async with make_client(db) as client:
            for _ in range(20):
                body = (await client.post("/graphql", json={"query": query})).json()
                assert "errors" not in body and body["data"]
        plans = []
        for conn in db._idle_reads:
            driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            plans += await driver.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%LIMIT%' AND statement LIKE '%FROM products%'"
                " AND statement NOT LIKE '%pg_prepared_statements%'"
            )
        assert plans
        for plan in plans:  # at most the 5 custom plans PostgreSQL always tries first
            assert "LIMIT $" not in plan["statement"]
            assert plan["custom_plans"] <= 5, dict(plan)
        assert sum(plan["generic_plans"] for plan in plans) >= 20 - 5 * len(plans)
    finally:
        await db.dispose()


def test_gc_freeze_is_on_for_servers_from_the_environment_only() -> None:
    assert Settings.from_env({"SHOPQL_DEBUG": "1"}).gc_freeze is True
    assert Settings.from_env({"SHOPQL_DEBUG": "1", "SHOPQL_GC_FREEZE": "0"}).gc_freeze is False
    assert Settings(debug=True).gc_freeze is False


def test_gc_threshold_is_raised_for_servers_from_the_environment_only() -> None:
    assert Settings.from_env({"SHOPQL_DEBUG": "1"}).gc_threshold == 10_000
    env = {"SHOPQL_DEBUG": "1", "SHOPQL_GC_THRESHOLD": "2500"}
    assert Settings.from_env(env).gc_threshold == 2500
    env["SHOPQL_GC_THRESHOLD"] = "0"  # Python's own
    assert Settings.from_env(env).gc_threshold is None
    assert Settings(debug=True).gc_threshold is None
    for bad in ("-1", "many", "1e4", "99999999999"):
        env["SHOPQL_GC_THRESHOLD"] = bad
        with pytest.raises(SettingsError, match="SHOPQL_GC_THRESHOLD"):
            Settings.from_env(env)


@pytest.mark.parametrize(("freeze", "threshold"), [(True, 10_000), (False, None)])
async def test_the_app_tunes_the_collector_after_start_up_when_asked(
    catalog_db: Database, monkeypatch: pytest.MonkeyPatch, freeze: bool, threshold: int | None
) -> None:
    calls: list[Any] = []

    class SpyGc:
        def collect(self, *args: Any) -> int:
            calls.append("collect")
            return 0

        def freeze(self) -> None:
            calls.append("freeze")

        def get_threshold(self) -> tuple[int, int, int]:
            return (700, 10, 10)

        def set_threshold(self, *thresholds: int) -> None:
            calls.append(thresholds)

    monkeypatch.setattr(app_module, "gc", SpyGc())
    client = make_client(catalog_db, gc_freeze=freeze, gc_threshold=threshold)
    async with client.app.router.lifespan_context(client.app), client:
        response = await client.post("/graphql", json={"query": LISTING})
        started = list(calls)
    assert response.status_code == 200 and "errors" not in response.json()
    if freeze:
        assert started == ["collect", "freeze", (10_000, 10, 10)]
        assert calls == [*started, (700, 10, 10)]  # as it was once the app stopped
    else:
        assert calls == []


PAGES = """query($slug: String!) {
  products(first: 3) { nodes { slug } }
  category(slug: $slug) { children(first: 5) { nodes { slug } } products(first: 3) { nodes { slug } } }
}"""


async def test_reused_statements_answer_fresh_data(fresh_db: Database) -> None:
    """Listing statements are built once per distinct query and reused (BuiltStatements):
    the same query asked again after a change answers the changed data, not a copy."""
    async with fresh_db.read() as conn:
        slug = (
            await conn.exec_driver_sql(
                "SELECT c.slug FROM categories c WHERE c.parent_id IS NULL AND EXISTS"
                " (SELECT 1 FROM categories k WHERE k.parent_id = c.id) ORDER BY c.id LIMIT 1"
            )
        ).scalar()
    assert slug is not None
    body = {"query": PAGES, "variables": {"slug": slug}}
    async with make_client(fresh_db) as client:
        first = (await client.post("/graphql", json=body)).json()["data"]
        newest = first["products"]["nodes"][0]["slug"]
        in_category = first["category"]["products"]["nodes"][0]["slug"]
        child = first["category"]["children"]["nodes"][0]["slug"]
        async with fresh_db.transaction() as conn:
            await conn.execute(
                sa.text("UPDATE products SET is_published = :no WHERE slug IN (:a, :b)"),
                {"no": False, "a": newest, "b": in_category},
            )
            await conn.execute(
                sa.text("UPDATE categories SET slug = :new WHERE slug = :old"),
                {"new": child + "-moved", "old": child},
            )
        again = (await client.post("/graphql", json=body)).json()["data"]
    assert newest not in [n["slug"] for n in again["products"]["nodes"]]
    assert in_category not in [n["slug"] for n in again["category"]["products"]["nodes"]]
    assert child + "-moved" in [n["slug"] for n in again["category"]["children"]["nodes"]]
    assert len(again["products"]["nodes"]) == 3


def test_built_statements_are_reused_per_key_and_bounded() -> None:
    built = BuiltStatements(size=2)
    made: list[str] = []

    def make(name: str) -> Any:
        def build() -> sa.Select[Any]:
            made.append(name)
            return sa.select(sa.literal(name))

        return build

    first = built.get("a", make("a"))
    assert built.get("a", make("a")) is first  # reused, not rebuilt
    built.get("b", make("b"))
    built.get("c", make("c"))  # past the bound: starts over
    assert built.get("a", make("a")) is not first
    assert made == ["a", "b", "c", "a"]
