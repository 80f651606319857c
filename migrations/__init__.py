"""Alembic revisions; `shopql migrate` applies them (models.migrate.upgrade)."""
