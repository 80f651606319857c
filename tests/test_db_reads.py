"""Read connections and the process-level tuning `shopql serve` applies (issue 8).

On SQLite reads come from a pool of their own: autocommit from the connect on and
`query_only`, so a read needs no isolation-level switch or rollback, and a write that slips
onto a read connection fails instead of committing. A server started from the environment
freezes what exists at start-up out of the garbage collector's sight.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from conftest import TEST_DATABASE_URL, make_client

import app as app_module
from models.db import Database
from models.settings import Settings

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


def test_gc_freeze_is_on_for_servers_from_the_environment_only() -> None:
    assert Settings.from_env({"SHOPQL_DEBUG": "1"}).gc_freeze is True
    assert Settings.from_env({"SHOPQL_DEBUG": "1", "SHOPQL_GC_FREEZE": "0"}).gc_freeze is False
    assert Settings(debug=True).gc_freeze is False


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_app_freezes_the_collector_after_start_up_when_asked(
    catalog_db: Database, monkeypatch: pytest.MonkeyPatch, freeze: bool
) -> None:
    calls: list[str] = []

    class SpyGc:
        def collect(self, *args: Any) -> int:
            calls.append("collect")
            return 0

        def freeze(self) -> None:
            calls.append("freeze")

    monkeypatch.setattr(app_module, "gc", SpyGc())
    client = make_client(catalog_db, gc_freeze=freeze)
    async with client.app.router.lifespan_context(client.app), client:
        response = await client.post("/graphql", json={"query": LISTING})
    assert response.status_code == 200 and "errors" not in response.json()
    assert calls == (["collect", "freeze"] if freeze else [])
