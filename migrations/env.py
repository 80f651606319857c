"""Alembic environment: run by `shopql migrate` with a live connection in the config."""

from __future__ import annotations

from alembic import context

# Importing the table modules registers their tables on the shared metadata.
import models.accounts.tables
import models.audit.tables
import models.catalog.tables
import models.checkout.tables
import models.orders.tables
import models.payments.tables
import models.webhooks.tables  # noqa: F401
from models.db import metadata
from models.migrate import include_name

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes one
    raise RuntimeError("run migrations through `shopql migrate`")


context.configure(
    connection=connection,
    include_name=include_name,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
