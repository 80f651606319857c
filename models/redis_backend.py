"""Redis for scale-out (REDIS_URL): the event fan-out between processes and the login
throttle shared by every process.

Nothing here runs in the embedded default. With REDIS_URL set, every process (each
`shopql serve` worker, each host) publishes the events its own transactions commit to one
Redis channel and relays the events of every *other* process to its local `EventBus`, so a
GraphQL subscription on process A hears of an order changed through process B. Local
subscribers hear their own process's events directly (no Redis round trip); events carry
the publishing process's random origin ID so a process never hears its own twice.

Pub/sub is fire-and-forget by design: the durable path for events is the webhook outbox
(models/webhooks), which every process reads from the database. A subscription that is
not connected while an event is published does not get it, as with any live feed; the
relay reconnects with backoff after Redis restarts and logs what it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson
import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from models.events import Event, EventBus

logger = logging.getLogger("shopql.redis")

EVENTS_CHANNEL = "shopql:events"
PUBLISH_QUEUE_LIMIT = 10_000
RECONNECT_MAX_DELAY = 5.0


def connect(url: str) -> redis_asyncio.Redis:
    """One client (a connection pool) per process; closed with `aclose()`."""
    return redis_asyncio.from_url(
        url,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
    )


def encode_events(origin: str, events: list[Event]) -> bytes:
    return orjson.dumps(
        {"origin": origin, "events": [[event.name, event.payload] for event in events]}
    )


def decode_events(raw: bytes | str) -> tuple[str, list[Event]]:
    """The origin and events of one channel message; ValueError when it is not ours."""
    message = orjson.loads(raw)
    if not isinstance(message, dict) or not isinstance(message.get("origin"), str):
        raise ValueError("not a shopql event message")
    events = []
    for item in message.get("events") or ():
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], dict)
        ):
            raise ValueError("malformed event in message")
        events.append(Event(item[0], item[1]))
    return message["origin"], events


class RedisEventRelay:
    """Publishes this process's committed events to Redis and hands other processes'
    events to the local bus. `start()` returns once the channel subscription is live."""

    def __init__(
        self, bus: EventBus, client: redis_asyncio.Redis, *, channel: str = EVENTS_CHANNEL
    ) -> None:
        self.bus = bus
        self.client = client
        self.channel = channel
        self.origin = secrets.token_hex(8)
        self.relayed = 0  # events received from other processes
        self.dropped = 0  # events not published because the queue was full
        self._outbox: asyncio.Queue[list[Event]] = asyncio.Queue(maxsize=PUBLISH_QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._remove_forwarder: Any = None

    async def start(self, *, subscribe_within: float = 5.0) -> None:
        self._remove_forwarder = self.bus.add_forwarder(self._enqueue)
        self._tasks = [
            asyncio.create_task(self._receive(), name="shopql-redis-receive"),
            asyncio.create_task(self._publish(), name="shopql-redis-publish"),
        ]
        try:
            await asyncio.wait_for(self._subscribed.wait(), subscribe_within)
        except TimeoutError:
            # Serving without the relay would silently split the fleet's live updates;
            # start-up fails loudly instead (the operator sees it in `shopql check` too).
            await self.stop()
            raise RuntimeError(
                "REDIS_URL is set but Redis did not accept a subscription within "
                f"{subscribe_within:g} s"
            ) from None

    async def stop(self) -> None:
        if self._remove_forwarder is not None:
            self._remove_forwarder()
            self._remove_forwarder = None
        # Give queued events a moment to reach Redis before the process goes.
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _enqueue(self, events: list[Event]) -> None:
        try:
            self._outbox.put_nowait(events)
        except asyncio.QueueFull:
            self.dropped += len(events)
            logger.warning("redis publish queue full: %d events not fanned out", len(events))

    async def _publish(self) -> None:
        delay = 0.1
        while True:
            events = await self._outbox.get()
            while True:
                try:
                    await self.client.publish(self.channel, encode_events(self.origin, events))
                    delay = 0.1
                    self._outbox.task_done()
                    break
                except RedisError as exc:
                    logger.warning("redis publish failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _receive(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None or message.get("type") != "message":
                        continue
                    self._deliver(message["data"])
            except RedisError as exc:
                logger.warning(
                    "redis subscription lost (%s); events from other processes are missed "
                    "until it is back",
                    type(exc).__name__,
                )
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    def _deliver(self, raw: bytes) -> None:
        try:
            origin, events = decode_events(raw)
        except ValueError:
            logger.warning("ignored a malformed message on %s", self.channel)
            return
        if origin == self.origin:
            return
        self.relayed += len(events)
        self.bus.publish_local(events)


# A sliding window per key in a sorted set, atomically: drop expired hits, refuse when
# full, else add this hit. Members are unique (time + random) so equal times do not merge.
_HIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(ARGV[2] * 1000))
return 1
"""


class RedisThrottle:
    """The login throttle (models/throttle.py's interface) shared by every process:
    at most `limit` hits per key per `window` seconds."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        limit: int,
        window: float,
        prefix: str = "shopql:throttle:",
    ) -> None:
        self.client = client
        self.limit = limit
        self.window = window
        self.prefix = prefix
        self._hit = client.register_script(_HIT)

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def hit(self, key: str) -> bool:
        now = time.time()
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        result = await self._hit(keys=[self._key(key)], args=[now, self.window, self.limit, member])
        return bool(result)

    async def release(self, key: str) -> None:
        await self.client.zpopmax(self._key(key))

    async def forgive(self, key: str) -> None:
        await self.client.delete(self._key(key))
