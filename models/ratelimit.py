"""Per-client rate limiting over query-cost points: a leaky bucket per client.

Each operation pours its cost (schema/limits.py's cost model, at least 1 point) into its
client's bucket; the bucket drains at `per_minute / 60` points a second and holds at most
`burst` points. An operation that would overflow the bucket is refused (nothing is poured)
with the whole seconds after which it would fit. An operation costing more than the whole
bucket is charged as a full bucket, so it runs once the bucket is empty.

The embedded default keeps the buckets in process memory (bounded: the least recently
used clients are forgotten first); with REDIS_URL every process shares the buckets in
Redis, updated atomically by one Lua script (the clock is Redis's own, so the hosts'
clocks need not agree). When Redis cannot be reached the request is let through and a
warning logged: an outage of the limiter store must not take the API down with it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

logger = logging.getLogger("shopql.ratelimit")

MAX_MEMORY_KEYS = 100_000
# Lua: drain the bucket since its last update, then pour `points` when they fit.
# Returns {1, ""} when admitted, {0, "<seconds until they fit>"} when refused (a string:
# Redis truncates Lua numbers to integers).
_LEAKY_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local points = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
if now > at then
  level = math.max(0, level - (now - at) * rate)
end
if level + points > capacity then
  return {0, tostring((level + points - capacity) / rate)}
end
level = level + points
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(level / rate * 1000) + 1000)
return {1, ''}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds (>= 1) until the refused operation would fit


def _refused(wait: float) -> Decision:
    return Decision(False, max(1, math.ceil(wait)))


class RateLimiter(Protocol):
    async def hit(self, key: str, points: int) -> Decision:
        """Pour `points` into `key`'s bucket, or refuse them (nothing poured)."""
        ...


class MemoryRateLimiter:
    """Buckets in this process's memory."""

    def __init__(self, *, per_minute: int, burst: int, max_keys: int = MAX_MEMORY_KEYS) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError("per_minute and burst must be positive")
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def hit(self, key: str, points: int) -> Decision:
        points_f = float(min(max(points, 1), self.capacity))
        now = time.monotonic()
        level, at = self._buckets.get(key, (0.0, now))
        level = max(0.0, level - (now - at) * self.rate)
        if level + points_f > self.capacity:
            self._buckets[key] = (level, now)
            self._buckets.move_to_end(key)
            return _refused((level + points_f - self.capacity) / self.rate)
        self._buckets[key] = (level + points_f, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # the least recently seen client goes first
        return Decision(True)


class RedisRateLimiter:
    """Buckets in Redis, shared by every process: one hash per client
    (`<prefix><key>`: level and time of the last pour), expiring once drained."""

    def __init__(self, client: Any, *, per_minute: int, burst: int, prefix: str) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError("per_minute and burst must be positive")
        self.rate = per_minute / 60.0
        self.capacity = burst
        self.prefix = prefix
        self._script = client.register_script(_LEAKY_BUCKET_LUA)

    async def hit(self, key: str, points: int) -> Decision:
        points = min(max(points, 1), self.capacity)
        try:
            allowed, wait = await self._script(
                keys=[self.prefix + key], args=[repr(self.rate), self.capacity, points]
            )
        except (RedisError, OSError) as exc:
            logger.warning("rate limiter: Redis unavailable, request let through: %s", exc)
            return Decision(True)
        if int(allowed) == 1:
            return Decision(True)
        return _refused(float(wait))


def client_key(*, user_id: int | None, client_ip: str) -> str:
    """The bucket of a request: its user when it carries a valid token, else its address
    (an IPv6 client by its /64: one host can hold a whole /64, so single addresses would
    give it millions of buckets)."""
    if user_id is not None:
        return f"user:{user_id}"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return f"ip:{client_ip[:64]}"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return f"net:{ipaddress.IPv6Network((address, 64), strict=False).network_address}/64"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return f"ip:{address}"


def rate_limiter(
    *, per_minute: int, burst: int, redis: Any = None, prefix: str = "shopql"
) -> RateLimiter | None:
    """The app's limiter: None when off (`per_minute` 0), in Redis when the app has a
    Redis client, else in process memory."""
    if per_minute <= 0:
        return None
    if redis is not None:
        return RedisRateLimiter(
            redis, per_minute=per_minute, burst=burst, prefix=f"{prefix}:ratelimit:"
        )
    return MemoryRateLimiter(per_minute=per_minute, burst=burst)


class RecentRefusals:
    """The clients this process refused, until their Retry-After passes (a local memo of
    the limiter's answer, kept whatever the store): a client that comes back earlier is
    refused without its document being parsed. Bounded; the oldest entries go first."""

    def __init__(self, max_keys: int = MAX_MEMORY_KEYS) -> None:
        self.max_keys = max_keys
        self._until: OrderedDict[str, float] = OrderedDict()

    def refuse(self, key: str, seconds: float) -> None:
        self._until[key] = time.monotonic() + seconds
        self._until.move_to_end(key)
        while len(self._until) > self.max_keys:
            self._until.popitem(last=False)

    def remaining(self, key: str) -> float:
        """Seconds until `key` may try again (0.0: now)."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._until[key]
            return 0.0
        return left
