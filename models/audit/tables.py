"""One row per staff mutation that changed something, written in the same transaction as
the change it describes (so the log never claims a change that rolled back)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import timestamp_column, utcnow


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_created", "created_at", "id"),
        sa.Index("ix_audit_actor", "actor_id", "id"),
        sa.Index("ix_audit_object", "object_type", "object_key", "id"),
        sa.Index("ix_audit_action", "action", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The staff member; their email is kept as a snapshot so the entry outlives the account.
    actor_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
    )
    actor_email: str = Field(sa_column=sa.Column(sa.String(254), nullable=False))
    # The mutation's GraphQL name, e.g. "productUpdate".
    action: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    # The GraphQL type and database key of the object it touched ("Product", "42").
    object_type: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    object_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    # JSON list of the input fields that changed (names only: never values, which may be
    # passwords or personal data).
    changed_fields: str = Field(
        default="[]", sa_column=sa.Column(sa.Text, nullable=False, server_default="[]")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


audit_log: sa.Table = AuditEntry.__table__  # type: ignore[attr-defined]
