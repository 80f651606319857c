"""Webhook endpoints, their event subscriptions, the delivery outbox and the attempt log.

A delivery row is written in the same transaction as the change it announces (see
models/webhooks/outbox.py), so it exists exactly when the change committed, and survives
restarts until the worker (models/webhooks/worker.py) has delivered it or given up.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import optional_timestamp_column, timestamp_column, utcnow

# Public event names (GraphQL enum WebhookEvent, the `Shopql-Event` header, body "event").
WEBHOOK_EVENTS = ("ORDER_CREATED", "ORDER_UPDATED", "PAYMENT_CHANGED", "VARIANT_STOCK_CHANGED")
PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)
MAX_ERROR = 300
_EVENT_LIST = ", ".join(f"'{e}'" for e in WEBHOOK_EVENTS)
_STATUS_LIST = ", ".join(f"'{s}'" for s in DELIVERY_STATUSES)


class Webhook(SQLModel, table=True):
    __tablename__ = "webhooks"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(sa_column=sa.Column(sa.String(2048), nullable=False))
    # Kept in plaintext because signing needs it; never returned by the API nor logged.
    secret: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    is_active: bool = Field(
        default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.true())
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class WebhookSubscription(SQLModel, table=True):
    """One (webhook, event) pair: the fan-out at commit joins on (event, webhook_id)."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        sa.CheckConstraint(f"event IN ({_EVENT_LIST})", name="ck_webhook_subscription_event"),
        sa.Index("ix_webhook_subscriptions_event", "event", "webhook_id"),
    )

    webhook_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), primary_key=True
        )
    )
    event: str = Field(sa_column=sa.Column(sa.String(40), primary_key=True))


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook: the durable outbox row and its delivery state."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.CheckConstraint(f"status IN ({_STATUS_LIST})", name="ck_webhook_delivery_status"),
        sa.CheckConstraint("attempts >= 0", name="ck_webhook_delivery_attempts"),
        # The worker's claim: due pending rows in order.
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at", "id"),
        sa.Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
        )
    )
    event: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    # The body's "data" object as JSON text (global IDs, camelCase keys).
    payload: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    status: str = Field(
        default=PENDING, sa_column=sa.Column(sa.String(16), nullable=False, server_default=PENDING)
    )
    attempts: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # Retries stop (status FAILED) after this moment: 24 hours after creation or replay.
    expires_at: datetime = Field(sa_column=timestamp_column())
    # A worker holds the row while it sends; an expired lease (crash) frees it again.
    locked_until: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    last_status_code: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.String(MAX_ERROR)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    delivered_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


class WebhookAttempt(SQLModel, table=True):
    """The log: one row per HTTP attempt of a delivery."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        )
    )
    attempt: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    status_code: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.String(MAX_ERROR)))
    duration_ms: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


webhooks: sa.Table = Webhook.__table__  # type: ignore[attr-defined]
webhook_subscriptions: sa.Table = WebhookSubscription.__table__  # type: ignore[attr-defined]
webhook_deliveries: sa.Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
webhook_attempts: sa.Table = WebhookAttempt.__table__  # type: ignore[attr-defined]
