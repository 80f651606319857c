"""Domain events raised inside write transactions and published only after they commit.

A data-layer function that changes something other parts of the system may care about
(stock, orders, payments) calls `record_event(conn, name, payload)` on the transaction's
connection. `Database.transaction()` then, just before it commits, writes the events
webhooks subscribe to into the durable outbox (`flush_pending`: one INSERT ... SELECT on
the same transaction, see models/webhooks/outbox.py), and after a successful commit
publishes them to `db.events`. On rollback both are dropped, so neither a subscriber nor a
webhook receiver ever hears of a change that did not happen.

The bus fans out in-process; subscribers (GraphQL subscriptions, the webhook worker's
wake-up) attach with `EventBus.subscribe()` or `EventBus.add_listener()`. With REDIS_URL
set, a relay (models/redis_backend.py) forwards every published batch to Redis and hands
other processes' events to `publish_local`, so subscribers hear of changes made anywhere.
Webhook workers in other processes learn of events through the durable outbox table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

logger = logging.getLogger("shopql.events")

# Names in use (payloads are JSON-serialisable dicts):
VARIANT_STOCK_CHANGED = "variant_stock_changed"  # {"variant_ids": [int, ...]}
ORDER_CREATED = "order_created"  # {"order_id": int}
ORDER_UPDATED = "order_updated"  # {"order_id": int, "fields": [str, ...]}
PAYMENT_CHANGED = "payment_changed"  # {"payment_id": int, "order_id": int | None}
# Not a webhook event: a delivery was queued again by hand; wakes this process's worker.
WEBHOOK_DELIVERY_QUEUED = "webhook_delivery_queued"  # {"delivery_id": int}

_PENDING = "shopql_pending_events"
QUEUE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    payload: dict[str, Any] = field(default_factory=dict)


def record_event(conn: AsyncConnection, name: str, payload: dict[str, Any]) -> None:
    """Queue an event on this transaction; published after commit, dropped on rollback."""
    conn.info.setdefault(_PENDING, []).append(Event(name, payload))


async def flush_pending(conn: AsyncConnection) -> None:
    """Write the transaction's queued events to the webhook outbox, on the transaction."""
    pending = conn.info.get(_PENDING)
    if pending:
        # Imported here: the outbox tables import models.db, which imports this module.
        from models.webhooks.outbox import write_outbox

        await write_outbox(conn, pending)


def take_pending(conn: AsyncConnection) -> list[Event]:
    return conn.info.pop(_PENDING, [])


class EventBus:
    """In-process fan-out. Slow subscribers lose their oldest events, never block writers."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._forwarders: list[Callable[[list[Event]], None]] = []
        self.published = 0

    def add_listener(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener(event)` synchronously for every event; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_forwarder(self, forwarder: Callable[[list[Event]], None]) -> Callable[[], None]:
        """Hand every batch this process publishes to `forwarder` (the Redis relay);
        returns a remover. Forwarders must not block."""
        self._forwarders.append(forwarder)
        return lambda: self._forwarders.remove(forwarder)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def publish(self, events: list[Event]) -> None:
        """Events this process committed: to local subscribers and to the forwarders."""
        self.publish_local(events)
        for forwarder in list(self._forwarders):
            try:
                forwarder(events)
            except Exception:
                logger.exception("event forwarder failed")

    def publish_local(self, events: list[Event]) -> None:
        """To this process's listeners and subscribers only."""
        for event in events:
            self.published += 1
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    logger.exception("event listener failed on %s", event.name)
            for queue in self._queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(event)
