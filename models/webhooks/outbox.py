"""Fan-out at commit: a transaction's domain events become delivery rows, one per active
webhook subscribed to the event, written by ONE `INSERT ... SELECT` inside the same
transaction (no round trip with results; no rows when nobody subscribed). So a delivery
exists exactly when its change committed, and survives any crash after the commit.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models import events as ev
from models.db import UTCDateTime, utcnow
from models.webhooks.tables import (
    PENDING,
    webhook_deliveries,
    webhook_subscriptions,
    webhooks,
)

# Domain event name -> public webhook event name.
PUBLIC_NAMES = {
    ev.ORDER_CREATED: "ORDER_CREATED",
    ev.ORDER_UPDATED: "ORDER_UPDATED",
    ev.PAYMENT_CHANGED: "PAYMENT_CHANGED",
    ev.VARIANT_STOCK_CHANGED: "VARIANT_STOCK_CHANGED",
}
RETRY_WINDOW = timedelta(hours=24)
# SQLite allows 500 terms in a compound SELECT; stay well below it.
CHUNK = 200
# Payload keys holding database keys, and the GraphQL type of their global IDs.
_ID_TYPES = {
    "order": "Order",
    "variant": "ProductVariant",
    "product": "Product",
    "payment": "Payment",
    "user": "User",
    "category": "Category",
    "collection": "Collection",
    "fulfillment": "Fulfillment",
}


def global_id(type_name: str, key: int | str) -> str:
    """The Relay global ID of (type, key): the scheme of resolvers/ids.encode (the data
    layer does not import the GraphQL layer; tests/test_webhooks.py checks they agree)."""
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def event_data(payload: dict[str, Any]) -> dict[str, Any]:
    """The body's "data": camelCase keys; `<thing>_id(s)` keys become global IDs."""
    data: dict[str, Any] = {}
    for key, value in payload.items():
        base, _, suffix = key.rpartition("_")
        type_name = _ID_TYPES.get(base)
        if type_name and suffix == "id" and isinstance(value, int):
            data[_camel(key)] = global_id(type_name, value)
        elif type_name and suffix == "ids" and isinstance(value, list | tuple):
            data[_camel(key)] = [
                global_id(type_name, v) if isinstance(v, int) else v for v in value
            ]
        else:
            data[_camel(key)] = value
    return data


def outbox_rows(events: Sequence[ev.Event]) -> list[tuple[str, str]]:
    """(public name, data JSON) of the events webhooks can subscribe to, in order."""
    return [
        (PUBLIC_NAMES[e.name], orjson.dumps(event_data(e.payload)).decode())
        for e in events
        if e.name in PUBLIC_NAMES
    ]


async def write_outbox(
    conn: AsyncConnection, events: Sequence[ev.Event], *, now: datetime | None = None
) -> None:
    """Queue a delivery of each event to every active webhook subscribed to it."""
    rows = outbox_rows(events)
    now = now or utcnow()
    for start in range(0, len(rows), CHUNK):
        await conn.execute(_fan_out(rows[start : start + CHUNK], now))


def _fan_out(rows: list[tuple[str, str]], now: datetime) -> Any:
    selects = [
        sa.select(
            sa.literal(seq, sa.Integer()).label("seq"),
            sa.literal(name, sa.String(40)).label("event"),
            sa.literal(data, sa.Text()).label("payload"),
        )
        for seq, (name, data) in enumerate(rows)
    ]
    events = (selects[0] if len(selects) == 1 else sa.union_all(*selects)).subquery("ev")
    sub, hook = webhook_subscriptions, webhooks
    timestamp = UTCDateTime()
    source = (
        sa.select(
            sub.c.webhook_id,
            events.c.event,
            events.c.payload,
            sa.literal(PENDING, sa.String(16)),
            sa.literal(0, sa.Integer()),
            sa.literal(now, timestamp),
            sa.literal(now + RETRY_WINDOW, timestamp),
            sa.literal(now, timestamp),
        )
        .select_from(
            events.join(sub, sub.c.event == events.c.event).join(
                hook, hook.c.id == sub.c.webhook_id
            )
        )
        .where(hook.c.is_active)
        .order_by(events.c.seq, sub.c.webhook_id)
    )
    columns = [
        "webhook_id",
        "event",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "expires_at",
        "created_at",
    ]
    return sa.insert(webhook_deliveries).from_select(columns, source)
