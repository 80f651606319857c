"""Discount and shipping administration data layer: promo codes (MANAGE_DISCOUNTS) and
shipping methods (MANAGE_SHIPPING). Keyword-only functions on the caller's connection;
they never commit.

A promo code's `code` is unique and stored upper case (checkout applies codes
case-insensitively by upper-casing them). Deleting a code removes its redemptions (the
FK cascades); orders keep the code as text, and open checkouts that held it lose it.
Deleting a shipping method sets open checkouts' method to NULL (the FK); orders keep the
method's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.checkout.pricing import ShippingMethodRecord
from models.checkout.tables import checkouts, promo_codes, shipping_methods
from models.db import Database, utcnow
from models.pagination import Page, PageArgs, SortKey, Window


class CodeTaken(Exception):
    """Another promo code has this code."""


class UsageBelowUses(Exception):
    """The new usage limit is below the times the code was used already."""

    def __init__(self, used: int) -> None:
        super().__init__(used)
        self.used = used


@dataclass(slots=True)
class PromoCodeRecord:
    id: int
    code: str
    kind: str
    value: int
    currency: str
    min_subtotal_amount: int
    starts_at: datetime | None
    ends_at: datetime | None
    usage_limit: int | None
    used_count: int
    once_per_customer: bool
    created_at: datetime
    updated_at: datetime


_PROMO_COLUMNS = [promo_codes.c[f.name] for f in fields(PromoCodeRecord)]


def _promo(row: Any) -> PromoCodeRecord:
    return PromoCodeRecord(*row[: len(_PROMO_COLUMNS)])


# --------------------------------------------------------------------------- promo codes


async def promo_codes_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int], for_update: bool = False
) -> dict[int, PromoCodeRecord]:
    stmt = sa.select(*_PROMO_COLUMNS).where(promo_codes.c.id.in_(ids))
    if for_update:
        stmt = stmt.with_for_update()
    return {row.id: _promo(row) for row in (await conn.execute(stmt)).all()}


async def code_holder(conn: AsyncConnection, *, code: str) -> int | None:
    return (
        await conn.execute(sa.select(promo_codes.c.id).where(promo_codes.c.code == code))
    ).scalar_one_or_none()


async def create_promo_code(conn: AsyncConnection, *, values: Mapping[str, Any]) -> int:
    now = utcnow()
    try:
        return int(
            (
                await conn.execute(
                    promo_codes.insert()
                    .values({**values, "created_at": now, "updated_at": now})
                    .returning(promo_codes.c.id)
                )
            ).scalar_one()
        )
    except sa.exc.IntegrityError:
        raise CodeTaken from None


async def update_promo_code(
    conn: AsyncConnection, *, promo_id: int, old_code: str, values: Mapping[str, Any]
) -> None:
    """Apply `values`; a new usage limit only while it is not below the uses so far
    (conditional, so a concurrent redemption cannot slip under it). A renamed code
    follows into the open checkouts that hold it."""
    stmt = promo_codes.update().where(promo_codes.c.id == promo_id)
    if values.get("usage_limit") is not None:
        stmt = stmt.where(promo_codes.c.used_count <= values["usage_limit"])
    try:
        result = await conn.execute(stmt.values({**values, "updated_at": utcnow()}))
    except sa.exc.IntegrityError:
        raise CodeTaken from None
    if result.rowcount != 1:
        used = (
            await conn.execute(
                sa.select(promo_codes.c.used_count).where(promo_codes.c.id == promo_id)
            )
        ).scalar_one()
        raise UsageBelowUses(int(used))
    new_code = values.get("code")
    if new_code is not None and new_code != old_code:
        await conn.execute(
            checkouts.update()
            .where(checkouts.c.promo_code == old_code, checkouts.c.status == "OPEN")
            .values(promo_code=new_code, updated_at=utcnow())
        )


async def delete_promo_code(conn: AsyncConnection, *, promo_id: int) -> PromoCodeRecord | None:
    """Delete the code (its redemptions go with it) and take it off open checkouts; the
    deleted record, or None when there was none."""
    row = (
        await conn.execute(
            promo_codes.delete().where(promo_codes.c.id == promo_id).returning(*_PROMO_COLUMNS)
        )
    ).first()
    if row is None:
        return None
    record = _promo(row)
    await conn.execute(
        checkouts.update()
        .where(checkouts.c.promo_code == record.code, checkouts.c.status == "OPEN")
        .values(promo_code=None, updated_at=utcnow())
    )
    return record


@dataclass(frozen=True, slots=True)
class PromoCodeFilter:
    search: str | None = None  # code fragment, upper case
    kind: str | None = None


def promo_window(args: PageArgs) -> Window:
    """By code, A to Z."""
    return Window.of(
        SortKey("promo-code", promo_codes.c.code, promo_codes.c.id, False, "str"), args
    )


def _like(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_promo_codes(
    db: Database, *, window: Window, promo_filter: PromoCodeFilter
) -> Page[PromoCodeRecord]:
    base = sa.select(*_PROMO_COLUMNS)
    if promo_filter.search:
        base = base.where(promo_codes.c.code.like(_like(promo_filter.search), escape="\\"))
    if promo_filter.kind is not None:
        base = base.where(promo_codes.c.kind == promo_filter.kind)
    async with db.read() as conn:
        rows = (await conn.execute(window.apply(base))).all()

    async def count() -> int:
        async with db.read() as conn:
            total = await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
            return int(total.scalar_one())

    return window.page(rows, _promo, count)


# --------------------------------------------------------------------------- shipping


def _method(row: Any) -> ShippingMethodRecord:
    return ShippingMethodRecord(
        row.id, row.name, row.price_amount, row.currency, tuple(row.countries.split()),
        row.free_above_amount,
    )  # fmt: skip


_METHOD_COLUMNS = (
    shipping_methods.c.id,
    shipping_methods.c.name,
    shipping_methods.c.price_amount,
    shipping_methods.c.currency,
    shipping_methods.c.countries,
    shipping_methods.c.free_above_amount,
)


async def shipping_method(conn: AsyncConnection, *, method_id: int) -> ShippingMethodRecord | None:
    row = (
        await conn.execute(sa.select(*_METHOD_COLUMNS).where(shipping_methods.c.id == method_id))
    ).first()
    return None if row is None else _method(row)


async def create_shipping_method(conn: AsyncConnection, *, values: Mapping[str, Any]) -> int:
    now = utcnow()
    return int(
        (
            await conn.execute(
                shipping_methods.insert()
                .values({**values, "created_at": now, "updated_at": now})
                .returning(shipping_methods.c.id)
            )
        ).scalar_one()
    )


async def update_shipping_method(
    conn: AsyncConnection, *, method_id: int, values: Mapping[str, Any]
) -> bool:
    result = await conn.execute(
        shipping_methods.update()
        .where(shipping_methods.c.id == method_id)
        .values({**values, "updated_at": utcnow()})
    )
    return result.rowcount == 1


async def delete_shipping_method(conn: AsyncConnection, *, method_id: int) -> bool:
    """Delete the method; open checkouts that chose it have none again (FK SET NULL)."""
    result = await conn.execute(shipping_methods.delete().where(shipping_methods.c.id == method_id))
    return result.rowcount == 1
