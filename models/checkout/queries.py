"""Checkout data layer: checkouts and lines (owner-scoped in SQL), shipping methods,
promo codes, and the set-based stock moves of checkout completion.

Stock moves with one conditional statement for all lines
(`UPDATE ... SET quantity = quantity - CASE id ... END WHERE ... quantity >= CASE ...`),
never read-then-write, so concurrent checkouts cannot oversell.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.catalog.tables import products, variants
from models.checkout.pricing import PromoRecord, ShippingMethodRecord
from models.checkout.tables import (
    checkout_attempts,
    checkout_lines,
    checkouts,
    promo_codes,
    promo_redemptions,
    shipping_methods,
)
from models.db import insert_ignoring_conflicts, utcnow
from models.grouping import group_records

MAX_LINES = 100
MAX_QUANTITY = 999


@dataclass(slots=True)
class CheckoutRecord:
    id: int
    token: str
    user_id: int | None
    email: str | None
    currency: str
    shipping_address_id: int | None
    shipping_method_id: int | None
    promo_code: str | None
    status: str
    completion_key: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class CheckoutLineRecord:
    id: int
    checkout_id: int
    variant_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class VariantInfo:
    """What checkout needs to know of a variant right now."""

    id: int
    product_id: int
    product_name: str
    name: str
    sku: str
    price_amount: int
    currency: str
    quantity: int
    is_published: bool


_CHECKOUT_COLUMNS = [checkouts.c[f.name] for f in fields(CheckoutRecord)]
_LINE_COLUMNS = [checkout_lines.c[f.name] for f in fields(CheckoutLineRecord)]


def _visible_to(viewer_id: int | None) -> sa.ColumnElement[bool]:
    """A guest checkout is reachable by its token alone; a customer's only by them."""
    if viewer_id is None:
        return checkouts.c.user_id.is_(None)
    return sa.or_(checkouts.c.user_id.is_(None), checkouts.c.user_id == viewer_id)


async def create_checkout(
    conn: AsyncConnection, *, user_id: int | None, email: str | None, currency: str
) -> CheckoutRecord:
    now = utcnow()
    row = (
        await conn.execute(
            checkouts.insert()
            .values(
                token=secrets.token_urlsafe(32),
                user_id=user_id,
                email=email,
                currency=currency,
                status="OPEN",
                created_at=now,
                updated_at=now,
            )
            .returning(*_CHECKOUT_COLUMNS)
        )
    ).one()
    return CheckoutRecord(*row)


async def checkouts_by_tokens(
    conn: AsyncConnection, *, tokens: Sequence[str], viewer_id: int | None
) -> dict[str, CheckoutRecord]:
    stmt = sa.select(*_CHECKOUT_COLUMNS).where(
        checkouts.c.token.in_(tokens), _visible_to(viewer_id)
    )
    return {row.token: CheckoutRecord(*row) for row in (await conn.execute(stmt)).all()}


async def checkout_for_update(
    conn: AsyncConnection, *, token: str, viewer_id: int | None
) -> CheckoutRecord | None:
    """The checkout, locked for the rest of the transaction (PostgreSQL row lock; SQLite
    already holds the write lock from BEGIN IMMEDIATE)."""
    stmt = (
        sa.select(*_CHECKOUT_COLUMNS)
        .where(checkouts.c.token == token, _visible_to(viewer_id))
        .with_for_update()
    )
    row = (await conn.execute(stmt)).first()
    return CheckoutRecord(*row) if row else None


async def lines_by_checkout_ids(
    conn: AsyncConnection, *, checkout_ids: Sequence[int]
) -> dict[int, list[CheckoutLineRecord]]:
    stmt = (
        sa.select(*_LINE_COLUMNS)
        .where(checkout_lines.c.checkout_id.in_(checkout_ids))
        .order_by(checkout_lines.c.checkout_id, checkout_lines.c.id)
    )
    return group_records((await conn.execute(stmt)).all(), "checkout_id", CheckoutLineRecord)


async def variant_info(
    conn: AsyncConnection, *, variant_ids: Sequence[int]
) -> dict[int, VariantInfo]:
    stmt = (
        sa.select(
            variants.c.id,
            variants.c.product_id,
            products.c.name,
            variants.c.name,
            variants.c.sku,
            variants.c.price_amount,
            variants.c.currency,
            variants.c.quantity,
            products.c.is_published,
        )
        .join(products, products.c.id == variants.c.product_id)
        .where(variants.c.id.in_(variant_ids))
    )
    return {row[0]: VariantInfo(*row) for row in (await conn.execute(stmt)).all()}


async def set_line_quantities(
    conn: AsyncConnection,
    *,
    checkout_id: int,
    current: Sequence[CheckoutLineRecord],
    wanted: Mapping[int, int],
) -> None:
    """Make the checkout's quantity of each variant in `wanted` what it says (0 removes),
    in at most three statements whatever the number of lines."""
    by_variant = {line.variant_id: line for line in current}
    updates = {by_variant[v].id: q for v, q in wanted.items() if v in by_variant and q > 0}
    deletes = [by_variant[v].id for v, q in wanted.items() if v in by_variant and q == 0]
    inserts = [
        {"checkout_id": checkout_id, "variant_id": v, "quantity": q, "created_at": utcnow()}
        for v, q in wanted.items()
        if v not in by_variant and q > 0
    ]
    if updates:
        await conn.execute(
            checkout_lines.update()
            .where(checkout_lines.c.id.in_(updates))
            .values(quantity=sa.case(updates, value=checkout_lines.c.id))
        )
    if deletes:
        await conn.execute(checkout_lines.delete().where(checkout_lines.c.id.in_(deletes)))
    if inserts:
        await conn.execute(checkout_lines.insert(), inserts)


async def delete_lines(conn: AsyncConnection, *, checkout_id: int, line_ids: Sequence[int]) -> int:
    result = await conn.execute(
        checkout_lines.delete().where(
            checkout_lines.c.checkout_id == checkout_id, checkout_lines.c.id.in_(line_ids)
        )
    )
    return int(result.rowcount)


async def update_checkout(conn: AsyncConnection, *, checkout_id: int, **values: Any) -> None:
    await conn.execute(
        checkouts.update()
        .where(checkouts.c.id == checkout_id)
        .values(updated_at=utcnow(), **values)
    )


async def attach_user(conn: AsyncConnection, *, checkout_id: int, user_id: int, email: str) -> bool:
    """A guest checkout becomes the customer's (only if it is still a guest checkout)."""
    result = await conn.execute(
        checkouts.update()
        .where(checkouts.c.id == checkout_id, checkouts.c.user_id.is_(None))
        .values(user_id=user_id, email=email, updated_at=utcnow())
    )
    return result.rowcount == 1


# --------------------------------------------------------------------------- shipping, promos


def _method(row: Any) -> ShippingMethodRecord:
    return ShippingMethodRecord(
        row.id, row.name, row.price_amount, row.currency, tuple(row.countries.split()),
        row.free_above_amount,
    )  # fmt: skip


async def list_shipping_methods(conn: AsyncConnection) -> list[ShippingMethodRecord]:
    rows = await conn.execute(
        sa.select(shipping_methods).order_by(shipping_methods.c.price_amount, shipping_methods.c.id)
    )
    return [_method(row) for row in rows.all()]


async def shipping_methods_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int]
) -> dict[int, ShippingMethodRecord]:
    rows = await conn.execute(sa.select(shipping_methods).where(shipping_methods.c.id.in_(ids)))
    return {row.id: _method(row) for row in rows.all()}


_PROMO_FIELDS = [f.name for f in fields(PromoRecord)]


async def promos_by_codes(conn: AsyncConnection, *, codes: Sequence[str]) -> dict[str, PromoRecord]:
    rows = await conn.execute(
        sa.select(*(promo_codes.c[n] for n in _PROMO_FIELDS)).where(promo_codes.c.code.in_(codes))
    )
    return {row.code: PromoRecord(*row) for row in rows.all()}


async def redeemed_by(
    conn: AsyncConnection, *, promo_id: int, customer_keys: Sequence[str]
) -> bool:
    row = await conn.execute(
        sa.select(promo_redemptions.c.id).where(
            promo_redemptions.c.promo_code_id == promo_id,
            promo_redemptions.c.customer_key.in_(customer_keys),
        )
    )
    return row.first() is not None


async def reserve_promo(
    conn: AsyncConnection, *, promo: PromoRecord, customer_keys: Sequence[str], attempt_key: str
) -> str | None:
    """Take one use of the code for a completion (before the charge). Returns the refusal
    code, or None. The caller rolls back on a refusal (a partial reservation may exist)."""
    keys = list(customer_keys) if promo.once_per_customer else [f"attempt:{attempt_key}"]
    insert = insert_ignoring_conflicts(promo_redemptions, conn.dialect.name)
    now = utcnow()
    for key in keys:
        result = await conn.execute(
            insert.values(
                promo_code_id=promo.id, customer_key=key, attempt_key=attempt_key, created_at=now
            )
        )
        if result.rowcount != 1:
            return "PROMO_CODE_ALREADY_USED"
    bump = await conn.execute(
        promo_codes.update()
        .where(
            promo_codes.c.id == promo.id,
            sa.or_(
                promo_codes.c.usage_limit.is_(None),
                promo_codes.c.used_count < promo_codes.c.usage_limit,
            ),
        )
        .values(used_count=promo_codes.c.used_count + 1)
    )
    return None if bump.rowcount == 1 else "PROMO_CODE_EXHAUSTED"


async def release_promo(conn: AsyncConnection, *, attempt_key: str) -> None:
    """Give back the use a declined completion had taken."""
    taken = (
        await conn.execute(
            promo_redemptions.delete()
            .where(promo_redemptions.c.attempt_key == attempt_key)
            .returning(promo_redemptions.c.promo_code_id)
        )
    ).first()
    if taken is not None:
        await conn.execute(
            promo_codes.update()
            .where(promo_codes.c.id == taken.promo_code_id)
            .values(used_count=promo_codes.c.used_count - 1)
        )


async def settle_promo(conn: AsyncConnection, *, attempt_key: str, order_id: int) -> None:
    await conn.execute(
        promo_redemptions.update()
        .where(promo_redemptions.c.attempt_key == attempt_key)
        .values(order_id=order_id)
    )


# --------------------------------------------------------------------------- stock


async def take_stock(conn: AsyncConnection, *, quantities: Mapping[int, int]) -> bool:
    """Take every quantity or nothing: one statement; False if any variant is short."""
    if not quantities:
        return True
    amount = sa.case(dict(quantities), value=variants.c.id)
    result = await conn.execute(
        variants.update()
        .where(variants.c.id.in_(quantities), variants.c.quantity >= amount)
        .values(quantity=variants.c.quantity - amount, updated_at=utcnow())
    )
    return result.rowcount == len(quantities)


async def return_stock(conn: AsyncConnection, *, quantities: Mapping[int, int]) -> None:
    if quantities:
        amount = sa.case(dict(quantities), value=variants.c.id)
        await conn.execute(
            variants.update()
            .where(variants.c.id.in_(quantities))
            .values(quantity=variants.c.quantity + amount, updated_at=utcnow())
        )


# --------------------------------------------------------------------------- attempts


@dataclass(slots=True)
class AttemptRecord:
    idempotency_key: str
    checkout_id: int
    fingerprint: str
    state: str
    snapshot: dict[str, Any]
    payment_id: int | None
    order_id: int | None
    error_code: str | None
    error_message: str | None


_ATTEMPT_COLUMNS = [checkout_attempts.c[f.name] for f in fields(AttemptRecord)]


async def lock_key(conn: AsyncConnection, *, key: str) -> None:
    """Serialise transactions that use the same idempotency key (until commit), so two
    first uses of one key cannot both reserve. SQLite writers are serialised already."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(key, 0)))
        )


async def attempt_by_key(conn: AsyncConnection, *, key: str) -> AttemptRecord | None:
    row = (
        await conn.execute(
            sa.select(*_ATTEMPT_COLUMNS).where(checkout_attempts.c.idempotency_key == key)
        )
    ).first()
    return AttemptRecord(*row) if row else None


async def record_attempt(
    conn: AsyncConnection,
    *,
    key: str,
    checkout_id: int,
    fingerprint: str,
    snapshot: dict[str, Any],
    payment_id: int,
) -> None:
    now = utcnow()
    await conn.execute(
        checkout_attempts.insert().values(
            idempotency_key=key,
            checkout_id=checkout_id,
            fingerprint=fingerprint,
            state="RESERVED",
            snapshot=snapshot,
            payment_id=payment_id,
            created_at=now,
            updated_at=now,
        )
    )


async def finish_attempt(
    conn: AsyncConnection,
    *,
    key: str,
    state: str,
    order_id: int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """RESERVED -> COMPLETED/FAILED, once: False when another call already finished it."""
    result = await conn.execute(
        checkout_attempts.update()
        .where(checkout_attempts.c.idempotency_key == key, checkout_attempts.c.state == "RESERVED")
        .values(
            state=state,
            order_id=order_id,
            error_code=error_code,
            error_message=error_message,
            updated_at=utcnow(),
        )
    )
    return result.rowcount == 1


async def stale_attempts(conn: AsyncConnection, *, older_than: datetime) -> list[AttemptRecord]:
    rows = await conn.execute(
        sa.select(*_ATTEMPT_COLUMNS).where(
            checkout_attempts.c.state == "RESERVED", checkout_attempts.c.updated_at < older_than
        )
    )
    return [AttemptRecord(*row) for row in rows.all()]


async def set_attempt_order(conn: AsyncConnection, *, key: str, order_id: int) -> None:
    await conn.execute(
        checkout_attempts.update()
        .where(checkout_attempts.c.idempotency_key == key)
        .values(order_id=order_id, updated_at=utcnow())
    )
