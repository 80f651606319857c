"""The delivery worker: claims due deliveries from the outbox and POSTs them, signed.

Runs as a background task inside every server process (SHOPQL_WEBHOOK_WORKER, on by
default) and as `shopql worker` on its own. Several workers may share one database:

- A claim is one statement that leases due rows: `UPDATE ... SET locked_until = now +
  LEASE, attempts = attempts + 1 WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
  RETURNING ...` on PostgreSQL (concurrent workers skip each other's rows); on SQLite the
  same statement without the lock clause, atomic under the single writer lock.
- A worker that dies mid-delivery holds its lease until it expires; then another worker
  (or the restarted one) sends the delivery again. Delivery is therefore at-least-once:
  receivers deduplicate by the `Shopql-Delivery` header.
- 2xx is DELIVERED. Anything else (status, timeout, refused connection) is retried with
  exponential backoff (10 s, 20 s, 40 s ... capped at 1 hour, with jitter) until 24 hours
  after the delivery was created (or replayed), then FAILED. Every attempt is logged.
- At most `concurrency` deliveries are in flight, each in its own task with a 10 s
  budget, so a slow receiver never holds up request handling or other receivers.

The worker wakes as soon as this process commits an event (EventBus listener) and
otherwise polls (events committed by other processes, retries coming due, restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import orjson
import sqlalchemy as sa

from models import telemetry
from models.db import Database, utcnow
from models.events import Event
from models.webhooks.outbox import global_id
from models.webhooks.security import GuardedBackend, UnsafeTarget, parse_url
from models.webhooks.signing import signature
from models.webhooks.tables import (
    DELIVERED,
    FAILED,
    MAX_ERROR,
    PENDING,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)

logger = logging.getLogger("shopql.webhooks")

USER_AGENT = "shopql-webhooks/1"


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (n = attempts made so far): base * 2^(n-1), capped, jittered."""

    base: float = 10.0
    cap: float = 3600.0
    jitter: float = 0.2  # +-20 %, so failed deliveries of one outage do not retry in step

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        seconds = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        if self.jitter:
            seconds *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    webhook_id: int
    event: str
    payload: str
    attempt: int
    created_at: datetime
    expires_at: datetime
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def body_of(delivery_id: int, event: str, created_at: datetime, payload: str) -> bytes:
    """The request body: fixed by the stored row, so every attempt sends the same bytes."""
    head = {"id": global_id("WebhookDelivery", delivery_id), "event": event}
    head["createdAt"] = created_at.isoformat()
    return orjson.dumps(head)[:-1] + b',"data":' + payload.encode() + b"}"


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


class WebhookWorker:
    def __init__(
        self,
        db: Database,
        *,
        allow_private: bool = False,
        concurrency: int = 8,
        poll_interval: float = 2.0,
        timeout: float = 10.0,
        lease: float = 60.0,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = utcnow,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.lease = timedelta(seconds=max(lease, timeout * 3))
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run in the background of the current event loop until `stop()`."""
        self._stopping = False
        self._remove_listener = self.db.events.add_listener(self._on_event)
        self._task = asyncio.create_task(self.serve(), name="shopql-webhook-worker")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop claiming, give deliveries in flight `grace` seconds, then cancel them (their
        leases expire and they are sent again later)."""
        self._stopping = True
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _on_event(self, _event: Event) -> None:
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def serve(self) -> None:
        while not self._stopping:
            try:
                free = self.concurrency - len(self._inflight)
                claimed = await self.claim(free) if free > 0 else []
                for delivery in claimed:
                    task = asyncio.create_task(self.deliver(delivery))
                    self._inflight.add(task)
                    task.add_done_callback(self._finished)
                if claimed and len(claimed) == free:
                    # Probably more due; come back when a slot frees up.
                    await self._sleep(self.poll_interval)
                    continue
                await self._sleep(await self._until_next_due())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("webhook worker iteration failed; retrying")
                await self._sleep(self.poll_interval)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            logger.error("webhook delivery task failed", exc_info=task.exception())

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event fires, and the worker would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()
        self._wake.clear()

    async def _until_next_due(self) -> float:
        """Seconds until the earliest pending delivery is due, at most the poll interval.
        A read, so an idle worker never takes SQLite's write lock."""
        d = webhook_deliveries.c
        async with self.db.read() as conn:
            earliest = (
                await conn.execute(
                    sa.select(sa.func.min(d.next_attempt_at)).where(d.status == PENDING)
                )
            ).scalar_one_or_none()
        if earliest is None:
            return self.poll_interval
        wait = (earliest - self.clock()).total_seconds()
        return min(self.poll_interval, max(0.05, wait))

    async def run_once(self) -> int:
        """Claim what is due now and deliver it all (tests and `--once`); returns the count."""
        claimed = await self.claim(self.concurrency)
        await asyncio.gather(*(self.deliver(d) for d in claimed))
        return len(claimed)

    # ---------------------------------------------------------------------- claim

    async def claim(self, limit: int) -> list[Claimed]:
        """Lease up to `limit` due deliveries of active webhooks; skip-locked across workers."""
        now = self.clock()
        d, w = webhook_deliveries.c, webhooks.c
        due = (
            sa.select(d.id)
            .where(
                d.status == PENDING,
                d.next_attempt_at <= now,
                sa.or_(d.locked_until.is_(None), d.locked_until < now),
                d.webhook_id.in_(sa.select(w.id).where(w.is_active)),
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            due = due.with_for_update(skip_locked=True, of=webhook_deliveries)
        claim = (
            sa.update(webhook_deliveries)
            .where(d.id.in_(due.scalar_subquery()))
            .values(locked_until=now + self.lease, attempts=d.attempts + 1)
            .returning(
                d.id, d.webhook_id, d.event, d.payload, d.attempts, d.created_at, d.expires_at
            )
        )
        async with self.db.transaction() as conn:
            rows = (await conn.execute(claim)).all()
            if not rows:
                return []
            hooks = {
                row.id: row
                for row in await conn.execute(
                    sa.select(w.id, w.url, w.secret).where(
                        w.id.in_({row.webhook_id for row in rows})
                    )
                )
            }
        claimed = [
            Claimed(
                row.id,
                row.webhook_id,
                row.event,
                row.payload,
                row.attempts,
                row.created_at,
                row.expires_at,
                hooks[row.webhook_id].url,
                hooks[row.webhook_id].secret,
            )
            for row in rows
            if row.webhook_id in hooks
        ]
        claimed.sort(key=lambda c: c.id)
        return claimed

    # -------------------------------------------------------------------- deliver

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = self._transport
            if transport is None:
                transport = httpx.AsyncHTTPTransport(
                    trust_env=False,  # no proxies: they would bypass the address check
                    limits=httpx.Limits(max_connections=self.concurrency * 2),
                )
                # Every connection resolves and checks its address (see security.py).
                pool = transport._pool
                pool._network_backend = GuardedBackend(allow_private=self.allow_private)
            self._client = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def send(self, delivery: Claimed) -> Outcome:
        body = body_of(delivery.id, delivery.event, delivery.created_at, delivery.payload)
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "Shopql-Event": delivery.event,
            "Shopql-Delivery": global_id("WebhookDelivery", delivery.id),
            "Shopql-Timestamp": str(timestamp),
            "Shopql-Signature": signature(delivery.secret, timestamp, body),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            parse_url(delivery.url)  # the scheme may not have changed, but be sure
            async with asyncio.timeout(self.timeout):
                async with self._http().stream(
                    "POST", delivery.url, content=body, headers=headers
                ) as response:
                    status = response.status_code  # the body is never read
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except UnsafeTarget as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no response within {self.timeout:g} s"
        except httpx.ConnectError as exc:
            reason = str(exc)
            error = _short(
                f"connection failed: {reason}" if "webhooks" in reason else "connection failed"
            )
        except httpx.HTTPError as exc:
            error = f"request failed: {type(exc).__name__}"
        duration = round((time.perf_counter() - started) * 1000)
        return Outcome(status, error, duration)

    async def deliver(self, delivery: Claimed) -> None:
        outcome = await self.send(delivery)
        await self.record(delivery, outcome)

    async def record(self, delivery: Claimed, outcome: Outcome) -> None:
        """Store the attempt's result and schedule the next one (or give up)."""
        now = self.clock()
        values: dict[str, object] = {
            "locked_until": None,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
        }
        if outcome.ok:
            values.update(status=DELIVERED, delivered_at=now)
            result = "delivered"
        elif now >= delivery.expires_at:
            values.update(status=FAILED)
            result = "failed"
        else:
            result = "retried"
            retry_at = now + self.backoff.delay(delivery.attempt)
            values.update(next_attempt_at=min(retry_at, delivery.expires_at))
        d = webhook_deliveries.c
        try:
            async with self.db.transaction() as conn:
                # Only while this worker's claim is current: a replay or a re-claim after
                # an expired lease changes `attempts` or the status, and then this result
                # no longer decides the row's state (the attempt is still logged).
                await conn.execute(
                    sa.update(webhook_deliveries)
                    .where(d.id == delivery.id, d.attempts == delivery.attempt, d.status == PENDING)
                    .values(**values)
                )
                await conn.execute(
                    sa.insert(webhook_attempts).values(
                        delivery_id=delivery.id,
                        attempt=delivery.attempt,
                        status_code=outcome.status_code,
                        error=outcome.error,
                        duration_ms=outcome.duration_ms,
                        created_at=now,
                    )
                )
        except sa.exc.IntegrityError:  # the webhook, and so the delivery, was deleted
            logger.info("webhook delivery %s was deleted while being sent", delivery.id)
            return
        telemetry.webhook_delivered(result)
        logger.log(
            logging.INFO if outcome.ok else logging.WARNING,
            "webhook delivery %s (%s, webhook %s) attempt %s: %s",
            delivery.id,
            delivery.event,
            delivery.webhook_id,
            delivery.attempt,
            "delivered" if outcome.ok else outcome.error,
        )
