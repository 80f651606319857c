"""Apply (or generate) Alembic revisions over the application's own engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from models.db import Database

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Leave the full-text search objects (created by hand in 0001) out of autogenerate."""
    if type_ == "table" and name is not None and name.startswith("product_search"):
        return False
    return name not in {"search_vector", "ix_products_search"}


def _config(connection: Any) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(db: Database, revision: str = "head") -> None:
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        await conn.run_sync(lambda sync_conn: command.upgrade(_config(sync_conn), revision))
        await conn.commit()


async def autogenerate(db: Database, message: str) -> None:
    async with db.engine.connect() as conn:
        await conn.run_sync(
            lambda sync_conn: command.revision(
                _config(sync_conn), message=message, autogenerate=True
            )
        )


async def pending(db: Database) -> list[str]:
    """Revisions not yet applied (empty when the schema is up to date)."""

    def _check(sync_conn: Any) -> list[str]:
        current = set(MigrationContext.configure(sync_conn).get_current_heads())
        script = ScriptDirectory.from_config(_config(sync_conn))
        heads = set(script.get_heads())
        if current == heads:
            return []
        lower = tuple(current) or "base"
        return [rev.revision for rev in script.iterate_revisions(tuple(heads), lower)]

    async with db.read() as conn:
        return await conn.run_sync(_check)
