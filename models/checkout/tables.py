"""Checkout tables: shipping methods, promo codes and their redemptions, checkouts, their
lines, and completion attempts (one per idempotency key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import optional_timestamp_column, timestamp_column, utcnow


def _int(**kw: Any) -> Any:
    return sa.Column(sa.Integer, nullable=False, **kw)


def _money(**kw: Any) -> Any:
    return sa.Column(sa.BigInteger, nullable=False, **kw)


class ShippingMethod(SQLModel, table=True):
    __tablename__ = "shipping_methods"
    __table_args__ = (
        sa.CheckConstraint("price_amount >= 0", name="ck_shipping_price"),
        sa.CheckConstraint("free_above_amount IS NULL OR free_above_amount >= 0", name="ck_free"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    price_amount: int = Field(sa_column=_money())
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    # ISO 3166-1 alpha-2 codes, space separated (a handful per method).
    countries: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    free_above_amount: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, nullable=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class PromoCode(SQLModel, table=True):
    __tablename__ = "promo_codes"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('PERCENTAGE', 'FIXED')", name="ck_promo_kind"),
        sa.CheckConstraint(
            "(kind = 'PERCENTAGE' AND value > 0 AND value <= 10000) OR "
            "(kind = 'FIXED' AND value > 0)",
            name="ck_promo_value",
        ),
        sa.CheckConstraint("min_subtotal_amount >= 0", name="ck_promo_min"),
        sa.CheckConstraint(
            "usage_limit IS NULL OR used_count <= usage_limit", name="ck_promo_usage"
        ),
        sa.CheckConstraint("used_count >= 0", name="ck_promo_used"),
    )

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(sa_column=sa.Column(sa.String(40), nullable=False, unique=True))
    kind: str = Field(sa_column=sa.Column(sa.String(12), nullable=False))
    # PERCENTAGE: basis points (1250 = 12.5 %); FIXED: minor units of `currency`.
    value: int = Field(sa_column=_money())
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    min_subtotal_amount: int = Field(default=0, sa_column=_money(server_default="0"))
    starts_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    ends_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    usage_limit: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    used_count: int = Field(default=0, sa_column=_int(server_default="0"))
    once_per_customer: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class PromoRedemption(SQLModel, table=True):
    """One use of a code, taken when a completion reserves it (before the charge) and
    given back if the payment is declined. `customer_key` names the customer (a row for
    the account and one for the email) for single-use codes, and the attempt otherwise,
    so the unique key enforces single use."""

    __tablename__ = "promo_redemptions"
    __table_args__ = (sa.UniqueConstraint("promo_code_id", "customer_key", name="uq_redemption"),)

    id: int | None = Field(default=None, primary_key=True)
    promo_code_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("promo_codes.id", ondelete="CASCADE"), nullable=False
        )
    )
    customer_key: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    attempt_key: str = Field(sa_column=sa.Column(sa.String(255), nullable=False, index=True))
    order_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE")),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Checkout(SQLModel, table=True):
    __tablename__ = "checkouts"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('OPEN', 'COMPLETING', 'COMPLETED')", name="ck_checkout_status"
        ),
        sa.Index("ix_checkouts_user", "user_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The public, unguessable identifier (the global ID encodes this, never `id`).
    token: str = Field(sa_column=sa.Column(sa.String(43), nullable=False, unique=True))
    user_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE")),
    )
    email: str | None = Field(default=None, sa_column=sa.Column(sa.String(254), nullable=True))
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    shipping_address_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("addresses.id", ondelete="SET NULL")),
    )
    shipping_method_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("shipping_methods.id", ondelete="SET NULL")),
    )
    promo_code: str | None = Field(default=None, sa_column=sa.Column(sa.String(40)))
    status: str = Field(
        default="OPEN", sa_column=sa.Column(sa.String(12), nullable=False, server_default="OPEN")
    )
    # The idempotency key of the completion under way (status COMPLETING) or done.
    completion_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class CheckoutLine(SQLModel, table=True):
    __tablename__ = "checkout_lines"
    __table_args__ = (
        sa.UniqueConstraint("checkout_id", "variant_id", name="uq_checkout_line_variant"),
        sa.CheckConstraint("quantity >= 1 AND quantity <= 999", name="ck_line_quantity"),
    )

    id: int | None = Field(default=None, primary_key=True)
    checkout_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("checkouts.id", ondelete="CASCADE"), nullable=False
        )
    )
    variant_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("product_variants.id", ondelete="CASCADE"), nullable=False
        )
    )
    quantity: int = Field(sa_column=_int())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class CheckoutAttempt(SQLModel, table=True):
    """A checkoutComplete call, keyed by its idempotency key.

    RESERVED: stock taken and a PENDING payment recorded (committed before the charge);
    COMPLETED: charged and the order exists; FAILED: declined, stock given back.
    `snapshot` freezes what is charged: lines, prices, totals, address, method.
    """

    __tablename__ = "checkout_attempts"
    __table_args__ = (
        sa.CheckConstraint("state IN ('RESERVED', 'COMPLETED', 'FAILED')", name="ck_attempt_state"),
        sa.Index("ix_attempts_checkout", "checkout_id"),
    )

    idempotency_key: str = Field(sa_column=sa.Column(sa.String(255), primary_key=True))
    checkout_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("checkouts.id", ondelete="CASCADE"), nullable=False
        )
    )
    fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    state: str = Field(sa_column=sa.Column(sa.String(12), nullable=False))
    snapshot: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    payment_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    order_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    error_code: str | None = Field(default=None, sa_column=sa.Column(sa.String(40)))
    error_message: str | None = Field(default=None, sa_column=sa.Column(sa.String(300)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


shipping_methods: sa.Table = ShippingMethod.__table__  # type: ignore[attr-defined]
promo_codes: sa.Table = PromoCode.__table__  # type: ignore[attr-defined]
promo_redemptions: sa.Table = PromoRedemption.__table__  # type: ignore[attr-defined]
checkouts: sa.Table = Checkout.__table__  # type: ignore[attr-defined]
checkout_lines: sa.Table = CheckoutLine.__table__  # type: ignore[attr-defined]
checkout_attempts: sa.Table = CheckoutAttempt.__table__  # type: ignore[attr-defined]
