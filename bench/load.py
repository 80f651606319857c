"""A small closed-loop HTTP load generator: asyncio + httpx, HTTP/1.1 keep-alive.

`concurrency` workers share one client (one kept-alive connection each); every worker
sends its next request as soon as the previous answer is read, until the time is up.
A warm-up phase at the same concurrency runs first and is not recorded. Latency is the
client's view: request sent to whole body received. Any non-200 answer, a body `check`
rejects, or a connection failing twice in a row stops the run with LoadError (a benchmark
of failing requests is worthless).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


class LoadError(Exception):
    """A request failed during a timed run."""


@dataclass(frozen=True)
class Request:
    method: str
    url: str  # path, relative to the client's base URL
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    concurrency: int
    latencies_ms: list[float]
    seconds: float

    @property
    def n(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else math.nan

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def client(base_url: str, concurrency: int, *, timeout: float = 30.0) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60
    )
    return httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, trust_env=False, http2=False
    )


# A kept-alive connection the server closed just as it was reused (its keep-alive timeout:
# uvicorn's and Node's are 5 s) fails with one of these before any answer arrives.
_STALE_CONNECTION = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


async def send(http: httpx.AsyncClient, request: Request) -> httpx.Response:
    """Send `request`; a connection that fails before answering is retried once on a new
    one (the benchmarked operations are all reads). A second failure, or any other transport
    error, is a LoadError: the server is down or broken."""
    for attempt in (1, 2):
        try:
            return await http.request(
                request.method, request.url, content=request.body, headers=request.headers
            )
        except _STALE_CONNECTION as exc:
            if attempt == 2:
                raise LoadError(
                    f"{request.method} {request.url}: {type(exc).__name__} twice: {exc!r}"
                ) from exc
        except httpx.TransportError as exc:
            raise LoadError(f"{request.method} {request.url}: {exc!r}") from exc
    raise AssertionError("unreachable")


Check = Callable[[httpx.Response], str | None]


def ok_json(response: httpx.Response) -> str | None:
    """HTTP 200 and no top-level `errors` member (GraphQL) in the body."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if b'"errors":' in response.content:
        return f"errors in the answer: {response.text[:300]}"
    return None


async def _phase(
    http: httpx.AsyncClient,
    request: Request,
    *,
    concurrency: int,
    seconds: float,
    check: Check,
    latencies: list[float] | None,
    max_requests: int | None = None,
) -> float:
    deadline = time.perf_counter() + seconds
    remaining = max_requests if max_requests is not None else math.inf

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            response = await send(http, request)
            elapsed = (time.perf_counter() - started) * 1000
            problem = check(response)
            if problem:
                raise LoadError(f"{request.method} {request.url}: {problem}")
            if latencies is not None:
                latencies.append(elapsed)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run(
    base_url: str,
    request: Request,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    check: Check = ok_json,
) -> LoadResult:
    """Warm up for `warmup` seconds, then drive for `duration` seconds; the latencies."""
    async with client(base_url, concurrency) as http:
        if warmup > 0:
            await _phase(
                http, request, concurrency=concurrency, seconds=warmup, check=check, latencies=None
            )
        latencies: list[float] = []
        seconds = await _phase(
            http,
            request,
            concurrency=concurrency,
            seconds=duration,
            check=check,
            latencies=latencies,
        )
    return LoadResult(concurrency, latencies, seconds)


async def run_count(
    base_url: str,
    requests: list[Request],
    *,
    count: int,
    concurrency: int,
    check: Check = ok_json,
    progress: Callable[[int], Any] | None = None,
) -> int:
    """Send `count` requests cycling through `requests` (no time bound); how many were sent.

    `progress(sent)` is called (and awaited when it returns an awaitable) every 1,000.
    """
    sent = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < count:
            request = requests[sent % len(requests)]
            sent += 1
            response = await send(http, request)
            problem = check(response)
            if problem:
                raise LoadError(f"{request.method} {request.url}: {problem}")
            if progress is not None and sent % 1000 == 0:
                result = progress(sent)
                if asyncio.iscoroutine(result):
                    await result

    async with client(base_url, concurrency) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return sent
