"""models.reads: hot reads through the driver answer what SQLAlchemy's execution would.

On PostgreSQL read connections `fetch_all` runs statements on asyncpg directly; everywhere
else it is SQLAlchemy's own execution. Both runs of the suite check the same answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from models.catalog import queries as q
from models.catalog.tables import categories, products, variants
from models.db import Database, track_sql
from models.reads import _plan, fetch_all, fetch_first, keys_in

pytestmark = pytest.mark.asyncio

ROWS_STATEMENTS = [
    # timestamps (a type with result and bind processors), booleans, a keyed batch
    sa.select(products.c.id, products.c.slug, products.c.created_at, products.c.is_published)
    .where(keys_in(products.c.id))
    .order_by(products.c.id),
    # a compiled-in value and a LIMIT, labels, an aggregate
    sa.select(variants.c.product_id.label("pid"), sa.func.count().label("n"))
    .where(variants.c.quantity >= 0)
    .group_by(variants.c.product_id)
    .order_by(variants.c.product_id)
    .limit(7),
    # a float whose conversion depends on the type the server reports
    sa.select(categories.c.id, sa.cast(categories.c.level, sa.Float()).label("weight"))
    .where(keys_in(categories.c.id))
    .order_by(categories.c.id),
    # an IN list compiled into the statement (one built per key), beside other values
    sa.select(products.c.id, products.c.created_at)
    .where(
        products.c.id.in_([5, 1, 3, 999_999]),
        products.c.created_at > datetime(2000, 1, 1, tzinfo=UTC),
    )
    .order_by(products.c.id),
    # the category subtree: a recursive CTE from roots compiled in, and a literal per row
    sa.select(q.subtree([1, 2]).c.id, sa.literal(7).label("parent")).order_by(sa.column("id")),
]


def _plain(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("index", range(len(ROWS_STATEMENTS)))
async def test_rows_equal_sqlalchemys_with_the_same_names_and_types(
    catalog_db: Database, index: int
) -> None:
    stmt = ROWS_STATEMENTS[index]
    params = {"ids": [5, 1, 3, 999_999]} if "ids" in str(stmt) else None
    async with catalog_db.read() as conn:
        expected = (await conn.execute(stmt, params)).all()
        answered = await fetch_all(conn, stmt, params)
        again = await fetch_all(conn, stmt, params)  # the compiled plan, reused
    assert expected, "the statement must find rows for the comparison to mean anything"
    assert _plain(answered) == _plain(expected) == _plain(again)
    for mine, theirs in zip(answered, expected, strict=True):
        for name in stmt.selected_columns.keys():  # noqa: SIM118
            assert getattr(mine, name) == getattr(theirs, name)
            assert type(getattr(mine, name)) is type(getattr(theirs, name))
    if index == 0:
        stamp = answered[0].created_at
        assert isinstance(stamp, datetime) and stamp.utcoffset() is not None


async def test_in_lists_compiled_in_run_on_the_driver_and_passed_ones_are_honoured(
    catalog_db: Database,
) -> None:
    """`column.in_([...])` used to send a statement to SQLAlchemy's execution (it renders
    the list per execution): the category page's subtree and children. Its values are in
    the statement, so the driver runs it with one parameter per element; a list passed
    when executing instead still answers for the list passed."""
    listed = sa.select(products.c.id).where(products.c.id.in_([3, 1])).order_by(products.c.id)
    empty = sa.select(products.c.id).where(products.c.id.in_([]))
    passed = (
        sa.select(products.c.id)
        .where(products.c.id.in_(sa.bindparam("ids", [1], expanding=True)))
        .order_by(products.c.id)
    )
    async with catalog_db.read() as conn:
        assert conn.sync_connection is not None
        driver = conn.sync_connection.connection.driver_connection
        plan = await _plan(listed, conn.dialect, driver)
        assert plan is not None and "IN (" in plan.sql and len(plan.arguments(None)) == 2
        assert _plain(await fetch_all(conn, listed)) == [(1,), (3,)]
        assert await fetch_all(conn, empty) == []
        assert _plain(await fetch_all(conn, passed)) == [(1,)]
        assert _plain(await fetch_all(conn, passed, {"ids": [2, 3]})) == [(2,), (3,)]


@dataclass(slots=True)
class _Listed:
    id: int
    slug: str
    created_at: datetime
    is_published: bool


async def test_rows_read_into_records_equal_records_made_from_sqlalchemys_rows(
    fresh_db: Database,
) -> None:
    """`into=Record`: the record built straight from the driver's row (values through the
    columns' types first) is the one built from SQLAlchemy's row, on a read connection and
    inside a transaction (SQLAlchemy's execution)."""
    stmt = ROWS_STATEMENTS[0]
    params = {"ids": [5, 1, 3, 999_999]}
    async with fresh_db.read() as conn:
        expected = [_Listed(*row) for row in (await conn.execute(stmt, params)).all()]
        answered = await fetch_all(conn, stmt, params, into=_Listed)
    async with fresh_db.transaction() as conn:
        in_transaction = await fetch_all(conn, stmt, params, into=_Listed)
    assert len(expected) == 3 and answered == expected == in_transaction
    assert all(type(r.created_at) is datetime and r.created_at.tzinfo for r in answered)
    async with fresh_db.read() as conn:
        grouped = await q.variants_by_product_ids(conn, product_ids=[2, 1])
        rows = (await conn.execute(sa.select(variants).order_by(variants.c.id))).all()
    assert sorted(grouped) == [1, 2]
    for product_id, records in grouped.items():
        assert [r.id for r in records] == [r.id for r in rows if r.product_id == product_id]
        assert all(type(r).__name__ == "VariantRecord" for r in records)


async def test_an_empty_batch_finds_nothing(catalog_db: Database) -> None:
    async with catalog_db.read() as conn:
        assert await q.variants_by_product_ids(conn, product_ids=[]) == {}
        assert await q.categories_by_ids(conn, ids=[]) == {}


async def test_hostile_values_are_bound_not_spliced(catalog_db: Database) -> None:
    async with catalog_db.read() as conn:
        for slug in ["x' OR '1'='1", "'; DROP TABLE products; --", "ü\u202e" * 100, ""]:
            assert await q.product_by_slug(conn, slug=slug, published_only=False) is None
        first = await fetch_first(conn, sa.select(products.c.slug).order_by(products.c.id))
        assert first is not None
        found = await q.product_by_slug(conn, slug=first.slug, published_only=False)
        assert found is not None and found.slug == first.slug


async def test_each_statement_is_counted_once(catalog_db: Database) -> None:
    async def run() -> int:
        stats = track_sql()
        async with catalog_db.read() as conn:
            await q.variants_by_product_ids(conn, product_ids=[1, 2, 3])
            await q.categories_by_ids(conn, ids=[1])
            await fetch_first(conn, ROWS_STATEMENTS[1])
        return stats.count

    assert await asyncio.create_task(run()) == 3


class _Undo(Exception):
    pass


async def test_a_transaction_sees_its_own_writes(fresh_db: Database) -> None:
    """Inside a write transaction the statement runs in it (SQLAlchemy's execution)."""
    async with fresh_db.read() as conn:
        before = await fetch_first(conn, sa.select(sa.func.max(products.c.id).label("top")))
    assert before is not None
    top = before.top
    stmt = sa.select(products.c.name).where(keys_in(products.c.id))
    with pytest.raises(_Undo):
        async with fresh_db.transaction() as conn:
            await conn.execute(products.update().where(products.c.id == top).values(name="new"))
            inside = await fetch_all(conn, stmt, {"ids": [top]})
            assert [row.name for row in inside] == ["new"]
            raise _Undo
    async with fresh_db.read() as conn:
        after = await fetch_all(conn, stmt, {"ids": [top]})
    assert len(after) == 1 and after[0].name != "new"


async def test_a_read_failing_in_the_database_raises_and_the_pool_goes_on(
    catalog_db: Database,
) -> None:
    if not catalog_db.url.startswith("postgresql"):
        pytest.skip("SQLite answers NULL for a division by zero")
    bad = sa.select((products.c.id / sa.literal(0)).label("boom"))
    for _ in range(2):
        with pytest.raises(Exception, match="division by zero"):
            async with catalog_db.read() as conn:
                await fetch_all(conn, bad)
        async with catalog_db.read() as conn:
            assert await q.categories_by_ids(conn, ids=[1])


async def test_a_lost_connection_is_not_handed_out_again(fresh_url: str) -> None:
    """The server drops a read connection: that read fails, the next ones get a live one."""
    if not fresh_url.startswith("postgresql"):
        pytest.skip("terminating a server connection is a PostgreSQL test")
    db, other = Database(fresh_url, pool_size=1), Database(fresh_url)
    try:
        async with db.read() as conn:
            pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        async with other.transaction() as killer:
            await killer.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        with pytest.raises(Exception):  # noqa: B017  # the driver's connection error
            async with db.read() as conn:
                await q.categories_by_ids(conn, ids=[1])
        for _ in range(3):
            async with db.read() as conn:
                assert await q.categories_by_ids(conn, ids=[1])
    finally:
        await db.dispose()
        await other.dispose()


async def test_a_cancelled_read_leaves_no_task_and_no_busy_connection(fresh_url: str) -> None:
    """Cancelled mid-query (a field nulled by its sibling's error): nothing of it outlives
    the cancellation, and the pool hands out no connection still cancelling a query."""
    db = Database(fresh_url, pool_size=1)
    slow = sa.select(sa.func.pg_sleep(5).label("x"), products.c.id).limit(1)
    if not fresh_url.startswith("postgresql"):
        slow = sa.select(products.c.id, products.c.slug).limit(1)
    try:

        async def read() -> None:
            async with db.read() as conn:
                await fetch_all(conn, slow)
                await asyncio.sleep(5)  # SQLite: cancelled here instead

        task = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not [t for t in others if "_cancel" in repr(t) or "read" in repr(t)]
        assert db.checked_out() == 0
        async with db.read() as conn:
            assert await asyncio.wait_for(q.categories_by_ids(conn, ids=[1]), 2)
    finally:
        await db.dispose()


def _batch_statements() -> list[tuple[str, Any]]:
    from models.accounts import queries as accounts
    from models.orders import queries as orders

    return [
        ("product_variants", q._VARIANTS_BY_PRODUCT_IDS),
        ("product_images", q._IMAGES_BY_PRODUCT_IDS),
        ("categories", q._CATEGORIES_BY_IDS),
        ("products", q._PRODUCTS_BY_IDS),
        ("order_lines", orders._LINES_BY_ORDER_IDS),
        ("users", accounts._USERS_BY_IDS),
    ]


@pytest.mark.parametrize(
    ("table", "index"), [(t, i) for i, (t, _) in enumerate(_batch_statements())]
)
async def test_batches_find_their_rows_through_an_index(
    catalog_db: Database, table: str, index: int
) -> None:
    """A batch's keys condition must be one an index serves: on SQLite a boolean-typed
    condition rendered as `(... IN (...)) = 1` scanned whole tables (6 ms per batch on
    100,000 products) while every answer stayed right."""
    stmt = _batch_statements()[index][1]
    if catalog_db.is_sqlite:
        async with catalog_db.read() as conn:
            assert conn.sync_connection is not None
            driver = conn.sync_connection.connection.driver_connection
            plan = await _plan(stmt, conn.dialect, driver)  # the text models.reads runs
            assert plan is not None
            explain = "EXPLAIN QUERY PLAN " + plan.sql
            steps = await conn.exec_driver_sql(explain, tuple(plan.arguments({"ids": [1, 2]})))
            details = [row[3] for row in steps]
        assert not [step for step in details if step.split()[:2] == ["SCAN", table]], details
        assert any(step.startswith(f"SEARCH {table} ") for step in details), details
    else:
        async with catalog_db.read() as conn:
            sql = str(
                stmt.params(ids=[1, 2]).compile(
                    dialect=conn.dialect,
                    compile_kwargs={"literal_binds": True, "render_postcompile": True},
                )
            )
        async with catalog_db.transaction() as conn:
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in await conn.exec_driver_sql("EXPLAIN " + sql))
        assert f"Seq Scan on {table}" not in plan, plan
