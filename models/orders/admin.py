"""Order administration data layer: fulfillments, cancellation and refunds.

Every write runs on the caller's transaction after the order row is locked
(`lock_order`: `SELECT ... FOR UPDATE` on PostgreSQL; SQLite write transactions are
serialised by `BEGIN IMMEDIATE` already), and every counter moves with one conditional
statement whose row count is checked:

- fulfilling adds to `order_lines.quantity_fulfilled` only where the result stays
  `<= quantity` (backed by the `ck_fulfilled` CHECK);
- a refund is reserved on `payments.refunded_amount` only where the result stays
  `<= amount` (backed by `ck_payment_refund`), before the gateway is called, and given
  back if the gateway refuses. The Stripe webhook (models/payments/webhooks.py) only ever
  raises `refunded_amount` to Stripe's cumulative total, so the two writers compose: a
  reservation is never lost to a webhook, and the gateway stays the final guard.

Lock order is always order row, then payment row (as the webhook does).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import utcnow
from models.grouping import group_records
from models.orders.queries import OrderLineRecord, OrderRecord, PaymentRecord
from models.orders.tables import fulfillment_lines, fulfillments, order_lines, orders
from models.payments.tables import payments, refunds

REFUNDABLE = ("PAID", "PARTIALLY_REFUNDED")


@dataclass(slots=True)
class FulfillmentRecord:
    id: int
    order_id: int
    tracking_number: str | None
    created_at: datetime


@dataclass(slots=True)
class FulfillmentLineRecord:
    fulfillment_id: int
    quantity: int
    order_line: OrderLineRecord


@dataclass(slots=True)
class RefundRecord:
    id: int
    payment_id: int
    order_id: int | None
    amount: int
    currency: str
    status: str
    idempotency_key: str
    actor_id: int | None
    error_message: str | None
    created_at: datetime


_ORDER_COLUMNS = [orders.c[f.name] for f in fields(OrderRecord)]
_LINE_COLUMNS = [order_lines.c[f.name] for f in fields(OrderLineRecord)]
_PAYMENT_COLUMNS = [payments.c[f.name] for f in fields(PaymentRecord)]
_FULFILLMENT_COLUMNS = [fulfillments.c[f.name] for f in fields(FulfillmentRecord)]
_REFUND_COLUMNS = [refunds.c[f.name] for f in fields(RefundRecord)]


# --------------------------------------------------------------------------- orders


async def lock_order(conn: AsyncConnection, *, order_id: int) -> OrderRecord | None:
    """The order, locked until the transaction ends; None when there is no such order."""
    row = (
        await conn.execute(
            sa.select(*_ORDER_COLUMNS).where(orders.c.id == order_id).with_for_update()
        )
    ).first()
    return None if row is None else OrderRecord(*row)


async def lines_of(conn: AsyncConnection, *, order_id: int) -> list[OrderLineRecord]:
    rows = await conn.execute(
        sa.select(*_LINE_COLUMNS)
        .where(order_lines.c.order_id == order_id)
        .order_by(order_lines.c.id)
    )
    return [OrderLineRecord(*row) for row in rows.all()]


async def set_order_status(conn: AsyncConnection, *, order_id: int, status: str) -> None:
    await conn.execute(
        orders.update().where(orders.c.id == order_id).values(status=status, updated_at=utcnow())
    )


# --------------------------------------------------------------------------- fulfillments


async def fulfill_lines(
    conn: AsyncConnection, *, order_id: int, quantities: Mapping[int, int]
) -> bool:
    """Add `quantities` (order line id -> units) to the lines' fulfilled counts, all or
    nothing: one conditional statement; False when any line would exceed its quantity
    (the caller rolls back)."""
    if not quantities:
        return False
    amount = sa.case(dict(quantities), value=order_lines.c.id)
    result = await conn.execute(
        order_lines.update()
        .where(
            order_lines.c.order_id == order_id,
            order_lines.c.id.in_(list(quantities)),
            order_lines.c.quantity_fulfilled + amount <= order_lines.c.quantity,
        )
        .values(quantity_fulfilled=order_lines.c.quantity_fulfilled + amount)
    )
    return result.rowcount == len(quantities)


async def create_fulfillment(
    conn: AsyncConnection,
    *,
    order_id: int,
    tracking_number: str | None,
    quantities: Mapping[int, int],
) -> int:
    fulfillment_id = int(
        (
            await conn.execute(
                fulfillments.insert()
                .values(order_id=order_id, tracking_number=tracking_number, created_at=utcnow())
                .returning(fulfillments.c.id)
            )
        ).scalar_one()
    )
    await conn.execute(
        fulfillment_lines.insert(),
        [
            {"fulfillment_id": fulfillment_id, "order_line_id": line_id, "quantity": quantity}
            for line_id, quantity in quantities.items()
        ],
    )
    return fulfillment_id


async def fulfillment_status(conn: AsyncConnection, *, order_id: int) -> str:
    """UNFULFILLED, PARTIALLY_FULFILLED or FULFILLED from the lines' counts."""
    row = (
        await conn.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(order_lines.c.quantity), 0),
                sa.func.coalesce(sa.func.sum(order_lines.c.quantity_fulfilled), 0),
            ).where(order_lines.c.order_id == order_id)
        )
    ).one()
    ordered, fulfilled = int(row[0]), int(row[1])
    if fulfilled == 0:
        return "UNFULFILLED"
    return "FULFILLED" if fulfilled >= ordered else "PARTIALLY_FULFILLED"


async def fulfillments_by_order_ids(
    conn: AsyncConnection, *, order_ids: Sequence[int]
) -> dict[int, list[FulfillmentRecord]]:
    stmt = (
        sa.select(*_FULFILLMENT_COLUMNS)
        .where(fulfillments.c.order_id.in_(order_ids))
        .order_by(fulfillments.c.order_id, fulfillments.c.id)
    )
    return group_records((await conn.execute(stmt)).all(), "order_id", FulfillmentRecord)


async def fulfillments_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int], owner_id: int | None, all_orders: bool
) -> dict[int, FulfillmentRecord]:
    """Fulfillments of orders the viewer may see (their own, or all with MANAGE_ORDERS)."""
    stmt = sa.select(*_FULFILLMENT_COLUMNS).where(fulfillments.c.id.in_(ids))
    if not all_orders:
        if owner_id is None:
            return {}
        stmt = stmt.join(orders, orders.c.id == fulfillments.c.order_id).where(
            orders.c.user_id == owner_id
        )
    return {row.id: FulfillmentRecord(*row) for row in (await conn.execute(stmt)).all()}


async def fulfillment_lines_by_fulfillment_ids(
    conn: AsyncConnection, *, fulfillment_ids: Sequence[int]
) -> dict[int, list[FulfillmentLineRecord]]:
    """Each fulfillment's lines with their order lines: one statement."""
    stmt = (
        sa.select(fulfillment_lines.c.fulfillment_id, fulfillment_lines.c.quantity, *_LINE_COLUMNS)
        .join(order_lines, order_lines.c.id == fulfillment_lines.c.order_line_id)
        .where(fulfillment_lines.c.fulfillment_id.in_(fulfillment_ids))
        .order_by(fulfillment_lines.c.fulfillment_id, order_lines.c.id)
    )
    found: dict[int, list[FulfillmentLineRecord]] = {}
    for row in (await conn.execute(stmt)).all():
        record = FulfillmentLineRecord(row[0], row[1], OrderLineRecord(*row[2:]))
        found.setdefault(record.fulfillment_id, []).append(record)
    return found


# --------------------------------------------------------------------------- refunds


def _payment_status(refunded: Any, amount: Any) -> Any:
    return sa.case(
        (refunded <= 0, "PAID"), (refunded >= amount, "REFUNDED"), else_="PARTIALLY_REFUNDED"
    )


async def refundable_payment(conn: AsyncConnection, *, order_id: int) -> PaymentRecord | None:
    """The order's paid (possibly partly refunded) payment, locked; None when it has none."""
    row = (
        await conn.execute(
            sa.select(*_PAYMENT_COLUMNS)
            .where(payments.c.order_id == order_id, payments.c.status.in_(REFUNDABLE))
            .order_by(payments.c.id)
            .limit(1)
            .with_for_update()
        )
    ).first()
    return None if row is None else PaymentRecord(*row)


async def _sync_order(conn: AsyncConnection, order_id: int | None, status: str) -> None:
    if order_id is not None:
        await conn.execute(
            orders.update()
            .where(orders.c.id == order_id)
            .values(payment_status=status, updated_at=utcnow())
        )


async def reserve_refund(
    conn: AsyncConnection, *, payment: PaymentRecord, amount: int, actor_id: int | None
) -> RefundRecord | None:
    """Reserve `amount` of the payment for a refund (compare-and-set: only while the
    refunded total stays within the payment) and record the PENDING refund with a fresh
    idempotency key; None when that much is not left to refund. The payment's and the
    order's status follow the new refunded total."""
    total = payments.c.refunded_amount + amount
    row = (
        await conn.execute(
            payments.update()
            .where(
                payments.c.id == payment.id,
                payments.c.status.in_(REFUNDABLE),
                total <= payments.c.amount,
            )
            .values(
                refunded_amount=total,
                status=_payment_status(total, payments.c.amount),
                updated_at=utcnow(),
            )
            .returning(payments.c.status)
        )
    ).first()
    if row is None:
        return None
    await _sync_order(conn, payment.order_id, row.status)
    now = utcnow()
    inserted = (
        await conn.execute(
            refunds.insert()
            .values(
                payment_id=payment.id,
                order_id=payment.order_id,
                amount=amount,
                currency=payment.currency,
                status="PENDING",
                idempotency_key=f"refund_{secrets.token_hex(20)}",
                actor_id=actor_id,
                created_at=now,
                updated_at=now,
            )
            .returning(*_REFUND_COLUMNS)
        )
    ).one()
    return RefundRecord(*inserted)


async def settle_refund(
    conn: AsyncConnection, *, refund_id: int, succeeded: bool, message: str = ""
) -> RefundRecord | None:
    """PENDING -> SUCCEEDED, or -> FAILED with the reservation given back (the payment's
    and order's status follow). None when another caller settled it first."""
    order_id = (
        await conn.execute(sa.select(refunds.c.order_id).where(refunds.c.id == refund_id))
    ).scalar_one_or_none()
    if order_id is not None:
        await lock_order(conn, order_id=order_id)
    row = (
        await conn.execute(
            refunds.update()
            .where(refunds.c.id == refund_id, refunds.c.status == "PENDING")
            .values(
                status="SUCCEEDED" if succeeded else "FAILED",
                error_message=None if succeeded else (message[:300] or "refused"),
                updated_at=utcnow(),
            )
            .returning(*_REFUND_COLUMNS)
        )
    ).first()
    if row is None:
        return None
    refund = RefundRecord(*row)
    if not succeeded:
        # Never below zero: a webhook may have lowered nothing, but be safe.
        back = sa.case(
            (
                payments.c.refunded_amount >= refund.amount,
                payments.c.refunded_amount - refund.amount,
            ),
            else_=0,
        )
        status = (
            await conn.execute(
                payments.update()
                .where(payments.c.id == refund.payment_id)
                .values(
                    refunded_amount=back,
                    status=_payment_status(back, payments.c.amount),
                    updated_at=utcnow(),
                )
                .returning(payments.c.status, payments.c.order_id)
            )
        ).one()
        await _sync_order(conn, status.order_id, status.status)
    return refund


async def pending_refunds(conn: AsyncConnection, *, older_than: datetime) -> list[RefundRecord]:
    rows = await conn.execute(
        sa.select(*_REFUND_COLUMNS)
        .where(refunds.c.status == "PENDING", refunds.c.created_at < older_than)
        .order_by(refunds.c.id)
    )
    return [RefundRecord(*row) for row in rows.all()]


async def payment_by_id(conn: AsyncConnection, *, payment_id: int) -> PaymentRecord | None:
    row = (
        await conn.execute(sa.select(*_PAYMENT_COLUMNS).where(payments.c.id == payment_id))
    ).first()
    return None if row is None else PaymentRecord(*row)
