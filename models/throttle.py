"""Failure throttling (login attempts): at most `limit` hits per key per `window` seconds.

The embedded default counts in process memory, bounded in size; a Redis implementation
with the same interface takes over when the app runs as several processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Protocol


class Throttle(Protocol):
    async def hit(self, key: str) -> bool:
        """Record an attempt; False (and nothing recorded) when the key is over its limit."""
        ...

    async def release(self, key: str) -> None:
        """Take back the key's latest attempt (it succeeded, so it was no failure)."""
        ...

    async def forgive(self, key: str) -> None:
        """Forget a key's attempts (after a success)."""
        ...


class MemoryThrottle:
    def __init__(self, *, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    async def hit(self, key: str) -> bool:
        now = time.monotonic()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            if len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)  # the least recently used key goes first
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    async def release(self, key: str) -> None:
        hits = self._hits.get(key)
        if hits:
            hits.pop()

    async def forgive(self, key: str) -> None:
        self._hits.pop(key, None)
