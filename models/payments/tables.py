"""Payments (one per charge attempt) and the dummy gateway's own ledger."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import timestamp_column, utcnow
from models.orders.tables import PAYMENT_STATUSES


class Payment(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        sa.CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in PAYMENT_STATUSES)})", name="ck_payment_status"
        ),
        sa.CheckConstraint(
            "amount >= 0 AND refunded_amount >= 0 AND refunded_amount <= amount",
            name="ck_payment_refund",
        ),
        sa.Index("ix_payments_order", "order_id"),
        sa.Index("ix_payments_psp", "gateway", "psp_reference"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("orders.id", ondelete="SET NULL")),
    )
    checkout_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("checkouts.id", ondelete="SET NULL")),
    )
    gateway: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    refunded_amount: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    psp_reference: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    # The checkoutComplete idempotency key, passed through to the gateway.
    idempotency_key: str = Field(sa_column=sa.Column(sa.String(255), nullable=False, unique=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class DummyCharge(SQLModel, table=True):
    """The built-in `dummy` gateway's ledger: what a real PSP would keep on its side.
    Keyed by idempotency key, so a retried charge returns the first outcome."""

    __tablename__ = "dummy_gateway_charges"

    idempotency_key: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    reference: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    outcome: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    refunded_amount: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


REFUND_STATES = ("PENDING", "SUCCEEDED", "FAILED")


class Refund(SQLModel, table=True):
    """One refund of a payment (orderRefund, orderCancel).

    PENDING: the amount is reserved on `payments.refunded_amount` (committed before the
    gateway call, so concurrent refunds cannot together exceed the payment) and the
    gateway is being asked with `idempotency_key`; SUCCEEDED: the gateway refunded it;
    FAILED: the gateway refused and the reservation was given back. A PENDING row older
    than a few minutes is a refund whose caller crashed mid-way: `recover_refunds` asks
    the gateway again with the same key and settles it."""

    __tablename__ = "refunds"
    __table_args__ = (
        sa.CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in REFUND_STATES)})", name="ck_refund_status"
        ),
        sa.CheckConstraint("amount > 0", name="ck_refund_amount"),
        sa.Index("ix_refunds_payment", "payment_id", "id"),
        sa.Index("ix_refunds_status", "status", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    payment_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("payments.id", ondelete="CASCADE"), nullable=False
        )
    )
    order_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("orders.id", ondelete="SET NULL")),
    )
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(12), nullable=False))
    idempotency_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    # Who asked (null once the staff account is deleted, or for a recovery).
    actor_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
    )
    error_message: str | None = Field(default=None, sa_column=sa.Column(sa.String(300)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class DummyRefund(SQLModel, table=True):
    """The `dummy` gateway's refund ledger, keyed by idempotency key, so a retried refund
    returns the first outcome and never refunds twice."""

    __tablename__ = "dummy_gateway_refunds"

    idempotency_key: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    reference: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    outcome: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


payments: sa.Table = Payment.__table__  # type: ignore[attr-defined]
dummy_charges: sa.Table = DummyCharge.__table__  # type: ignore[attr-defined]
refunds: sa.Table = Refund.__table__  # type: ignore[attr-defined]
dummy_refunds: sa.Table = DummyRefund.__table__  # type: ignore[attr-defined]
