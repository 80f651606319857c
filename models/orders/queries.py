"""Orders data layer: creating orders from a completed checkout, reading them scoped to
their owner (or to staff), listing with keyset pagination and filters; payments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from models.accounts.queries import ADDRESS_FIELDS
from models.accounts.tables import addresses, users
from models.db import BuiltStatements, Database, utcnow
from models.events import ORDER_CREATED, PAYMENT_CHANGED, record_event
from models.grouping import embedded_list, group_by, group_records
from models.orders.tables import order_lines, orders
from models.pagination import Page, PageArgs, SortKey, Window, group_rows, per_parent
from models.payments.tables import payments
from models.reads import fetch_all, keys_in


@dataclass(slots=True)
class OrderRecord:
    id: int
    number: str
    user_id: int | None
    email: str
    status: str
    payment_status: str
    currency: str
    subtotal_amount: int
    shipping_amount: int
    discount_amount: int
    total_amount: int
    shipping_address_id: int | None
    shipping_method_name: str | None
    promo_code: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class OrderLineRecord:
    id: int
    order_id: int
    variant_id: int | None
    product_name: str
    variant_name: str
    sku: str
    quantity: int
    quantity_fulfilled: int
    unit_amount: int
    total_amount: int
    currency: str


@dataclass(slots=True)
class PaymentRecord:
    id: int
    order_id: int | None
    gateway: str
    status: str
    amount: int
    refunded_amount: int
    currency: str
    psp_reference: str | None
    created_at: datetime


_ORDER_COLUMNS = [orders.c[f.name] for f in fields(OrderRecord)]
_LINE_COLUMNS = [order_lines.c[f.name] for f in fields(OrderLineRecord)]
_PAYMENT_COLUMNS = [payments.c[f.name] for f in fields(PaymentRecord)]
_N = len(_ORDER_COLUMNS)


def _order(row: Any) -> OrderRecord:
    return OrderRecord(*row[:_N])


# --------------------------------------------------------------------------- writes


async def copy_address(conn: AsyncConnection, *, address_id: int) -> int:
    """A frozen copy (owned by nobody) for an order, so later edits do not rewrite history."""
    cols = [addresses.c[name] for name in ADDRESS_FIELDS]
    now = utcnow()
    stmt = addresses.insert().from_select(
        [*ADDRESS_FIELDS, "created_at", "updated_at"],
        sa.select(*cols, sa.literal(now, addresses.c.created_at.type),
                  sa.literal(now, addresses.c.updated_at.type))
        .where(addresses.c.id == address_id),
    ).returning(addresses.c.id)  # fmt: skip
    return int((await conn.execute(stmt)).scalar_one())


async def create_payment(
    conn: AsyncConnection,
    *,
    checkout_id: int,
    gateway: str,
    amount: int,
    currency: str,
    idempotency_key: str,
) -> int:
    now = utcnow()
    return int(
        (
            await conn.execute(
                payments.insert()
                .values(
                    checkout_id=checkout_id,
                    gateway=gateway,
                    status="PENDING",
                    amount=amount,
                    currency=currency,
                    idempotency_key=idempotency_key,
                    created_at=now,
                    updated_at=now,
                )
                .returning(payments.c.id)
            )
        ).scalar_one()
    )


async def settle_payment(
    conn: AsyncConnection,
    *,
    payment_id: int,
    status: str,
    psp_reference: str | None,
    order_id: int | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if psp_reference is not None:
        values["psp_reference"] = psp_reference
    if order_id is not None:
        values["order_id"] = order_id
    result = await conn.execute(
        payments.update()
        .where(payments.c.id == payment_id)
        .values(**values)
        .returning(payments.c.order_id)
    )
    settled = result.first()
    if settled is not None:
        record_event(
            conn, PAYMENT_CHANGED, {"payment_id": payment_id, "order_id": settled.order_id}
        )


async def create_order(
    conn: AsyncConnection,
    *,
    checkout_id: int,
    user_id: int | None,
    email: str,
    currency: str,
    subtotal: int,
    shipping: int,
    discount: int,
    shipping_address_id: int | None,
    shipping_method_name: str | None,
    promo_code: str | None,
    lines: Sequence[dict[str, Any]],
) -> int:
    """Insert the order and its line snapshots (three statements, whatever the lines);
    ORDER_CREATED is published after the transaction commits."""
    now = utcnow()
    order_id = int(
        (
            await conn.execute(
                orders.insert()
                .values(
                    number=f"pending-{checkout_id}",
                    checkout_id=checkout_id,
                    user_id=user_id,
                    email=email,
                    status="UNFULFILLED",
                    payment_status="PAID",
                    currency=currency,
                    subtotal_amount=subtotal,
                    shipping_amount=shipping,
                    discount_amount=discount,
                    total_amount=subtotal + shipping - discount,
                    shipping_address_id=shipping_address_id,
                    shipping_method_name=shipping_method_name,
                    promo_code=promo_code,
                    created_at=now,
                    updated_at=now,
                )
                .returning(orders.c.id)
            )
        ).scalar_one()
    )
    # Human-friendly and unique by construction: derived from the primary key.
    await conn.execute(
        orders.update().where(orders.c.id == order_id).values(number=str(10_000 + order_id))
    )
    await conn.execute(
        order_lines.insert(),
        [
            {
                "order_id": order_id,
                "variant_id": line["variant_id"],
                "product_name": line["product_name"],
                "variant_name": line["variant_name"],
                "sku": line["sku"],
                "quantity": line["quantity"],
                "unit_amount": line["unit_amount"],
                "total_amount": line["unit_amount"] * line["quantity"],
                "currency": currency,
            }
            for line in lines
        ],
    )
    record_event(conn, ORDER_CREATED, {"order_id": order_id})
    return order_id


async def order_id_of_checkout(conn: AsyncConnection, *, checkout_id: int) -> int | None:
    return (
        await conn.execute(sa.select(orders.c.id).where(orders.c.checkout_id == checkout_id))
    ).scalar_one_or_none()


# --------------------------------------------------------------------------- reads


async def orders_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int], owner_id: int | None, all_orders: bool
) -> dict[int, OrderRecord]:
    """Orders by ID: the owner's only, or any when `all_orders` (MANAGE_ORDERS)."""
    stmt = sa.select(*_ORDER_COLUMNS).where(orders.c.id.in_(ids))
    if not all_orders:
        if owner_id is None:
            return {}
        stmt = stmt.where(orders.c.user_id == owner_id)
    return {row.id: _order(row) for row in (await conn.execute(stmt)).all()}


async def payments_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int], owner_id: int | None, all_orders: bool
) -> dict[int, PaymentRecord]:
    """Payments of orders the viewer may see (their own, or all with MANAGE_ORDERS)."""
    stmt = sa.select(*_PAYMENT_COLUMNS).where(payments.c.id.in_(ids))
    if not all_orders:
        if owner_id is None:
            return {}
        stmt = stmt.join(orders, orders.c.id == payments.c.order_id).where(
            orders.c.user_id == owner_id
        )
    return {row.id: PaymentRecord(*row) for row in (await conn.execute(stmt)).all()}


# Built once (values bound at execution): the lines of every order listing.
_LINES_BY_ORDER_IDS = (
    sa.select(*_LINE_COLUMNS)
    .where(keys_in(order_lines.c.order_id))
    .order_by(order_lines.c.order_id, order_lines.c.id)
)


async def lines_by_order_ids(
    conn: AsyncConnection, *, order_ids: Sequence[int]
) -> dict[int, list[OrderLineRecord]]:
    ids = {"ids": list(order_ids)}
    return group_by(
        await fetch_all(conn, _LINES_BY_ORDER_IDS, ids, into=OrderLineRecord), "order_id"
    )


async def payments_by_order_ids(
    conn: AsyncConnection, *, order_ids: Sequence[int]
) -> dict[int, list[PaymentRecord]]:
    stmt = (
        sa.select(*_PAYMENT_COLUMNS)
        .where(payments.c.order_id.in_(order_ids))
        .order_by(payments.c.order_id, payments.c.id)
    )
    return group_records((await conn.execute(stmt)).all(), "order_id", PaymentRecord)


ORDER_SORTS = {
    "NUMBER": (orders.c.id, "int"),
    "CREATED_AT": (orders.c.created_at, "datetime"),
    "TOTAL": (orders.c.total_amount, "int"),
}


def order_window(args: PageArgs, *, field: str = "CREATED_AT", descending: bool = True) -> Window:
    expr, kind = ORDER_SORTS[field]
    return Window.of(SortKey(f"order-{field}", expr, orders.c.id, descending, kind), args)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class OrderFilter:
    statuses: tuple[str, ...] | None = None
    payment_statuses: tuple[str, ...] | None = None
    customer: str | None = None
    created_gte: datetime | None = None
    created_lte: datetime | None = None


def _like(fragment: str) -> str:
    escaped = fragment.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter(f: OrderFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.statuses is not None:
        conds.append(orders.c.status.in_(f.statuses))
    if f.payment_statuses is not None:
        conds.append(orders.c.payment_status.in_(f.payment_statuses))
    if f.customer:
        pattern = _like(f.customer)
        name = sa.func.lower(users.c.first_name + " " + users.c.last_name)
        conds.append(
            sa.or_(
                sa.func.lower(orders.c.email).like(pattern, escape="\\"),
                orders.c.user_id.in_(sa.select(users.c.id).where(name.like(pattern, escape="\\"))),
            )
        )
    if f.created_gte is not None:
        conds.append(orders.c.created_at >= f.created_gte)
    if f.created_lte is not None:
        conds.append(orders.c.created_at <= f.created_lte)
    return conds


_LISTINGS = BuiltStatements()  # order pages, per distinct listing (like products')


async def list_orders(
    db: Database, *, window: Window, owner_id: int | None, order_filter: OrderFilter | None
) -> Page[OrderRecord]:
    """A page of orders: one customer's (`owner_id`) or, with None, everyone's (staff)."""

    def build() -> tuple[sa.Select[Any], sa.Select[Any]]:
        base = sa.select(*_ORDER_COLUMNS)
        if owner_id is not None:
            base = base.where(orders.c.user_id == owner_id)
        if order_filter is not None:
            base = base.where(*_filter(order_filter))
        return base, window.apply(base)

    base, page = _LISTINGS.get((window, owner_id, order_filter), build)
    async with db.read() as conn:
        rows = (await conn.execute(page)).all()

    async def count() -> int:
        async with db.read() as conn:
            total = await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
            return int(total.scalar_one())

    return window.page(rows, _order, count)


async def addresses_by_ids(conn: AsyncConnection, *, ids: Sequence[int]) -> dict[int, Any]:
    """Addresses by ID with no owner check: only for objects (checkouts, orders) whose
    access was checked already."""
    from models.accounts.queries import AddressRecord

    cols = [addresses.c[f.name] for f in fields(AddressRecord)]
    rows = await conn.execute(sa.select(*cols).where(addresses.c.id.in_(ids)))
    return {row.id: AddressRecord(*row) for row in rows.all()}


# An order's lines as a column of its row (PostgreSQL), as catalog pages embed variants
# (models.catalog.queries, "embedded relations"): JSON text of the values
# `lines_by_order_ids` reads, in its order, for `OrderLineRecord(*values)`.
EMBEDDED_LINES = (
    sa.select(embedded_list(_LINE_COLUMNS, order_lines.c.id))
    .where(order_lines.c.order_id == orders.c.id)
    .scalar_subquery()
    .label("embedded_lines")
)


def embeds_lines(dialect: str, selected: frozenset[str]) -> bool:
    """Whether an order page whose orders are asked for `selected` fields embeds lines."""
    return dialect == "postgresql" and "lines" in selected


async def orders_by_users(
    conn: AsyncConnection, *, user_ids: Sequence[int], window: Window, embed_lines: bool = False
) -> dict[int, list[Any]]:
    """One page of orders per customer, for many customers in one statement; with
    `embed_lines` each row carries its lines (`embedded_lines`, PostgreSQL only)."""
    extra = [EMBEDDED_LINES] if embed_lines else []

    def base_for(user_id: int) -> sa.Select[Any]:
        return sa.select(*_ORDER_COLUMNS, *extra).where(orders.c.user_id == user_id)

    def build() -> sa.Select[Any]:
        return per_parent(window, user_ids, base_for)

    stmt = _LISTINGS.get(("by_users", window, tuple(user_ids), embed_lines), build)
    rows = await fetch_all(conn, stmt)
    return group_rows(window, rows)


async def order_counts_by_users(
    conn: AsyncConnection, *, user_ids: Sequence[int]
) -> dict[int, int]:
    stmt = (
        sa.select(orders.c.user_id, sa.func.count())
        .where(orders.c.user_id.in_(user_ids))
        .group_by(orders.c.user_id)
    )
    return {row[0]: row[1] for row in (await conn.execute(stmt)).all()}


def order_page(window: Window, rows: list[Any], count: Any) -> Page[OrderRecord]:
    return window.page(rows, _order, count)
