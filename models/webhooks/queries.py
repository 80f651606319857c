"""Webhook endpoints and their deliveries: writes (on the caller's transaction) and reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from models.db import Database, utcnow
from models.pagination import Page, PageArgs, SortKey, Window, group_rows, per_parent
from models.webhooks.outbox import RETRY_WINDOW
from models.webhooks.tables import (
    PENDING,
    webhook_attempts,
    webhook_deliveries,
    webhook_subscriptions,
    webhooks,
)


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: int
    url: str
    events: tuple[str, ...]
    is_active: bool
    secret_set: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    webhook_id: int
    event: str
    payload: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    delivery_id: int
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: datetime


# ------------------------------------------------------------------------- endpoints


async def create_webhook(
    conn: AsyncConnection, *, url: str, secret: str, events: Sequence[str], is_active: bool
) -> int:
    now = utcnow()
    result = await conn.execute(
        sa.insert(webhooks)
        .values(url=url, secret=secret, is_active=is_active, created_at=now, updated_at=now)
        .returning(webhooks.c.id)
    )
    webhook_id = int(result.scalar_one())
    await _subscribe(conn, webhook_id, events)
    return webhook_id


async def _subscribe(conn: AsyncConnection, webhook_id: int, events: Iterable[str]) -> None:
    rows = [{"webhook_id": webhook_id, "event": e} for e in events]
    if rows:
        await conn.execute(sa.insert(webhook_subscriptions), rows)


async def lock_webhook(conn: AsyncConnection, *, webhook_id: int) -> WebhookRecord | None:
    """The webhook, locked for update on PostgreSQL (SQLite: the transaction is the lock)."""
    stmt = sa.select(webhooks).where(webhooks.c.id == webhook_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    found = await _events_of(conn, [webhook_id])
    return _webhook(row, found.get(webhook_id, ()))


async def update_webhook(
    conn: AsyncConnection,
    *,
    webhook_id: int,
    values: dict[str, Any],
    events: Sequence[str] | None,
) -> None:
    await conn.execute(
        sa.update(webhooks).where(webhooks.c.id == webhook_id).values(**values, updated_at=utcnow())
    )
    if events is not None:
        await conn.execute(
            sa.delete(webhook_subscriptions).where(webhook_subscriptions.c.webhook_id == webhook_id)
        )
        await _subscribe(conn, webhook_id, events)


async def delete_webhook(conn: AsyncConnection, *, webhook_id: int) -> bool:
    """Deletes the endpoint with its subscriptions, deliveries and their log."""
    result = await conn.execute(sa.delete(webhooks).where(webhooks.c.id == webhook_id))
    return result.rowcount > 0


def _webhook(row: Any, events: Sequence[str]) -> WebhookRecord:
    return WebhookRecord(
        row.id,
        row.url,
        tuple(events),
        row.is_active,
        bool(row.secret),
        row.created_at,
        row.updated_at,
    )


async def _events_of(conn: AsyncConnection, webhook_ids: list[int]) -> dict[int, list[str]]:
    s = webhook_subscriptions
    rows = await conn.execute(
        sa.select(s.c.webhook_id, s.c.event)
        .where(s.c.webhook_id.in_(webhook_ids))
        .order_by(s.c.webhook_id, s.c.event)
    )
    found: dict[int, list[str]] = {}
    for webhook_id, event in rows:
        found.setdefault(webhook_id, []).append(event)
    return found


_WEBHOOK_COLUMNS = [webhooks.c[n] for n in ("id", "url", "secret", "is_active")] + [
    webhooks.c.created_at,
    webhooks.c.updated_at,
]


async def list_webhooks(db: Database) -> list[WebhookRecord]:
    """Every endpoint, oldest first (a shop has a handful)."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(*_WEBHOOK_COLUMNS).order_by(webhooks.c.id))).all()
        found = await _events_of(conn, [row.id for row in rows]) if rows else {}
    return [_webhook(row, found.get(row.id, ())) for row in rows]


async def webhooks_by_ids(db: Database, *, ids: Sequence[int]) -> dict[int, WebhookRecord]:
    async with db.read() as conn:
        rows = (
            await conn.execute(sa.select(*_WEBHOOK_COLUMNS).where(webhooks.c.id.in_(ids)))
        ).all()
        found = await _events_of(conn, [row.id for row in rows]) if rows else {}
    return {row.id: _webhook(row, found.get(row.id, ())) for row in rows}


# ------------------------------------------------------------------------ deliveries


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    webhook_id: int | None = None
    status: str | None = None
    event: str | None = None


_DELIVERY_COLUMNS = [webhook_deliveries.c[name] for name in DeliveryRecord.__slots__]


def _delivery(row: Any) -> DeliveryRecord:
    values = {name: getattr(row, name) for name in DeliveryRecord.__slots__}
    if values["status"] != PENDING:
        values["next_attempt_at"] = None  # only meaningful while the delivery is pending
    return DeliveryRecord(**values)


def delivery_window(args: PageArgs) -> Window:
    """Newest first."""
    sort = SortKey("whd", webhook_deliveries.c.id, webhook_deliveries.c.id, True, "int")
    return Window.of(sort, args)


def _conditions(f: DeliveryFilter) -> list[ColumnElement[bool]]:
    c = webhook_deliveries.c
    conds: list[ColumnElement[bool]] = []
    if f.webhook_id is not None:
        conds.append(c.webhook_id == f.webhook_id)
    if f.status is not None:
        conds.append(c.status == f.status)
    if f.event is not None:
        conds.append(c.event == f.event)
    return conds


async def list_deliveries(
    db: Database, *, window: Window, delivery_filter: DeliveryFilter
) -> Page[DeliveryRecord]:
    base = sa.select(*_DELIVERY_COLUMNS).where(*_conditions(delivery_filter))
    async with db.read() as conn:
        rows = (await conn.execute(window.apply(base))).all()

    async def count() -> int:
        async with db.read() as conn:
            total = await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
            return int(total.scalar_one())

    return window.page(rows, _delivery, count)


def delivery_page(window: Window, rows: Sequence[Any], count: Any) -> Page[DeliveryRecord]:
    return window.page(rows, _delivery, count)


async def deliveries_by_webhooks(
    db: Database, *, webhook_ids: Sequence[int], window: Window
) -> dict[int, list[Any]]:
    """One page of deliveries per webhook, for many webhooks in one statement."""

    def base_for(webhook_id: int) -> sa.Select[Any]:
        return sa.select(*_DELIVERY_COLUMNS).where(webhook_deliveries.c.webhook_id == webhook_id)

    async with db.read() as conn:
        rows = (await conn.execute(per_parent(window, webhook_ids, base_for))).all()
    return group_rows(window, rows)


async def delivery_counts_by_webhooks(
    db: Database, *, webhook_ids: Sequence[int]
) -> dict[int, int]:
    c = webhook_deliveries.c
    stmt = (
        sa.select(c.webhook_id, sa.func.count())
        .where(c.webhook_id.in_(webhook_ids))
        .group_by(c.webhook_id)
    )
    async with db.read() as conn:
        return {row[0]: row[1] for row in (await conn.execute(stmt)).all()}


async def deliveries_by_ids(db: Database, *, ids: Sequence[int]) -> dict[int, DeliveryRecord]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(*_DELIVERY_COLUMNS).where(webhook_deliveries.c.id.in_(ids))
        )
        return {row.id: _delivery(row) for row in rows}


async def attempts_by_delivery(
    db: Database, *, delivery_ids: Sequence[int]
) -> dict[int, list[AttemptRecord]]:
    """Each delivery's attempt log, oldest first (one statement for all deliveries)."""
    a = webhook_attempts
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(*(a.c[n] for n in AttemptRecord.__slots__))
            .where(a.c.delivery_id.in_(delivery_ids))
            .order_by(a.c.delivery_id, a.c.id)
        )
        found: dict[int, list[AttemptRecord]] = {}
        for row in rows:
            found.setdefault(row.delivery_id, []).append(AttemptRecord(*row))
    return found


async def requeue_delivery(conn: AsyncConnection, *, delivery_id: int) -> bool:
    """Send again now (a retry of a pending or failed delivery, a replay of a delivered one)
    with a fresh 24-hour retry window. False when there is no such delivery."""
    now = utcnow()
    result = await conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(
            status=PENDING,
            next_attempt_at=now,
            expires_at=now + RETRY_WINDOW,
            locked_until=None,
            delivered_at=None,
        )
    )
    return result.rowcount > 0
