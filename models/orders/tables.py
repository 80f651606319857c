"""Orders and their lines. Lines are snapshots (names, SKU, prices) that outlive the
variant they were bought as."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import timestamp_column, utcnow

ORDER_STATUSES = ("UNFULFILLED", "PARTIALLY_FULFILLED", "FULFILLED", "CANCELED")
PAYMENT_STATUSES = ("PENDING", "PAID", "PARTIALLY_REFUNDED", "REFUNDED", "FAILED")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        sa.CheckConstraint(_in("status", ORDER_STATUSES), name="ck_order_status"),
        sa.CheckConstraint(_in("payment_status", PAYMENT_STATUSES), name="ck_order_payment"),
        sa.CheckConstraint(
            "subtotal_amount >= 0 AND shipping_amount >= 0 AND discount_amount >= 0 "
            "AND total_amount = subtotal_amount + shipping_amount - discount_amount "
            "AND total_amount >= 0",
            name="ck_order_totals",
        ),
        sa.Index("ix_orders_user", "user_id", "id"),
        sa.Index("ix_orders_created", "created_at", "id"),
        sa.Index("ix_orders_total", "total_amount", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(sa_column=sa.Column(sa.String(20), nullable=False, unique=True))
    # One order per checkout: the constraint that makes completion exactly-once.
    checkout_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("checkouts.id", ondelete="SET NULL"), unique=True
        ),
    )
    user_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
    )
    email: str = Field(sa_column=sa.Column(sa.String(254), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    payment_status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    subtotal_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    shipping_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    discount_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    total_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    shipping_address_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("addresses.id", ondelete="SET NULL")),
    )
    shipping_method_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    promo_code: str | None = Field(default=None, sa_column=sa.Column(sa.String(40)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class OrderLine(SQLModel, table=True):
    __tablename__ = "order_lines"
    __table_args__ = (
        sa.CheckConstraint("quantity >= 1", name="ck_order_line_quantity"),
        sa.CheckConstraint(
            "quantity_fulfilled >= 0 AND quantity_fulfilled <= quantity", name="ck_fulfilled"
        ),
        sa.CheckConstraint("total_amount = unit_amount * quantity", name="ck_line_total"),
        sa.Index("ix_order_lines_order", "order_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
        )
    )
    variant_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("product_variants.id", ondelete="SET NULL")),
    )
    product_name: str = Field(sa_column=sa.Column(sa.String(250), nullable=False))
    variant_name: str = Field(sa_column=sa.Column(sa.String(250), nullable=False))
    sku: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    quantity: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    quantity_fulfilled: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    unit_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    total_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))


orders: sa.Table = Order.__table__  # type: ignore[attr-defined]
order_lines: sa.Table = OrderLine.__table__  # type: ignore[attr-defined]


class Fulfillment(SQLModel, table=True):
    """One shipment of (part of) an order."""

    __tablename__ = "fulfillments"
    __table_args__ = (sa.Index("ix_fulfillments_order", "order_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
        )
    )
    tracking_number: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class FulfillmentLine(SQLModel, table=True):
    """How many units of one order line a fulfillment shipped."""

    __tablename__ = "fulfillment_lines"
    __table_args__ = (
        sa.CheckConstraint("quantity >= 1", name="ck_fulfillment_line_quantity"),
        sa.UniqueConstraint("fulfillment_id", "order_line_id", name="uq_fulfillment_line"),
        sa.Index("ix_fulfillment_lines_order_line", "order_line_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fulfillment_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("fulfillments.id", ondelete="CASCADE"), nullable=False
        )
    )
    order_line_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("order_lines.id", ondelete="CASCADE"), nullable=False
        )
    )
    quantity: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


fulfillments: sa.Table = Fulfillment.__table__  # type: ignore[attr-defined]
fulfillment_lines: sa.Table = FulfillmentLine.__table__  # type: ignore[attr-defined]
