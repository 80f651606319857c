"""Alembic revisions build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import DatabaseFactory

import models.accounts.tables
import models.catalog.tables
import models.checkout.tables
import models.orders.tables
import models.payments.tables  # noqa: F401
from models.db import Database, metadata
from models.migrate import include_name, pending, upgrade


async def _drop_all(url: str) -> None:
    db = Database(url)
    async with db.engine.connect() as conn:
        await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
        await conn.commit()
    await db.dispose()


@pytest.fixture
def empty_url(databases: DatabaseFactory, tmp_path: Any) -> Iterator[str]:
    """A database with no tables at all."""
    if not databases.is_postgres:
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"
        return
    url = databases.copy()
    asyncio.run(_drop_all(url))
    yield url
    databases.drop(url)


@pytest.fixture
async def empty_db(empty_url: str) -> AsyncIterator[Database]:
    db = Database(empty_url)
    yield db
    await db.dispose()


def _diff(sync_conn: Any) -> list[Any]:
    context = MigrationContext.configure(
        sync_conn, opts={"include_name": include_name, "compare_type": True}
    )
    return list(compare_metadata(context, metadata))


async def test_upgrade_builds_the_declared_schema_and_is_idempotent(empty_db: Database) -> None:
    assert await pending(empty_db)
    await upgrade(empty_db)
    assert await pending(empty_db) == []
    await upgrade(empty_db)  # a second run changes nothing and does not fail
    async with empty_db.read() as conn:
        assert await conn.run_sync(_diff) == []


async def test_constraints_back_the_invariants(empty_db: Database) -> None:
    await upgrade(empty_db)
    async with empty_db.transaction() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO products (id, name, slug, currency, created_at, updated_at) "
            "VALUES (1, 'A', 'a', 'USD', '2025-01-01', '2025-01-01')"
        )
    bad = [
        "INSERT INTO product_variants (product_id, sku, price_amount, currency, quantity, "
        "created_at, updated_at) VALUES (1, 'S1', 100, 'USD', -1, '2025-01-01', '2025-01-01')",
        "INSERT INTO products (name, slug, currency, created_at, updated_at) "
        "VALUES ('B', 'a', 'USD', '2025-01-01', '2025-01-01')",
        "INSERT INTO product_variants (product_id, sku, price_amount, currency, "
        "created_at, updated_at) VALUES (99, 'S2', 100, 'USD', '2025-01-01', '2025-01-01')",
    ]
    for statement in bad:
        with pytest.raises(sa.exc.IntegrityError):
            async with empty_db.transaction() as conn:
                await conn.exec_driver_sql(statement)
