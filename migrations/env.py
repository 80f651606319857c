"""Alembic environment: run by `shopql migrate` with a live connection in the config."""

from __future__ import annotations

from alembic import context

import models.catalog.tables  # noqa: F401  (registers the tables on the metadata)
from models.db import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes one
    raise RuntimeError("run migrations through `shopql migrate`")


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Leave the full-text search objects (created by hand in 0001) out of autogenerate."""
    if type_ == "table" and name is not None and name.startswith("product_search"):
        return False
    return not (type_ == "column" and name == "search_vector")


context.configure(
    connection=connection,
    include_name=include_name,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
