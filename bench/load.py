"""A small closed-loop HTTP load generator: asyncio streams, HTTP/1.1 keep-alive.

`concurrency` workers each keep one connection open and send their next request as soon
as the previous answer is read, until the time is up. A warm-up phase at the same
concurrency runs first and is not recorded. Latency is the client's view: request sent
to whole body received. Any non-200 answer, a body `check` rejects, or a connection
failing twice in a row stops the run with LoadError (a benchmark of failing requests is
worthless).

The timed requests go through `Connection`, a minimal HTTP/1.1 client (a request's bytes
are built once; an answer is its status line, headers and a Content-Length or chunked
body). The client shares the machine's two cores with the servers it measures: httpx
(h11 in Python) spent about 2.2 ms of CPU per answer at concurrency 32, seven times what
the servers spent making it, so every system's requests per second were the load
generator's. This client spends 0.03 to 0.1 ms. httpx is kept for the one-off requests
(`send`, `client`: the harness's answer checks), where its completeness matters more.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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


@dataclass(frozen=True)
class Answer:
    """What `Connection.send` read: the status and the (de-chunked) body."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


Check = Callable[[Answer | httpx.Response], str | None]


def ok_json(response: Answer | httpx.Response) -> str | None:
    """HTTP 200 and no top-level `errors` member (GraphQL) in the body."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if b'"errors":' in response.content:
        return f"errors in the answer: {response.text[:300]}"
    return None


MAX_HEAD = 64 * 1024  # an answer's status line and headers, at most


class _Stale(Exception):
    """The connection closed before an answer began (a kept-alive one the server let go)."""


def request_bytes(base_url: str, request: Request) -> bytes:
    """`request` as HTTP/1.1 bytes for the server at `base_url` (sent as they are)."""
    parts = urlsplit(base_url)
    body = request.body or b""
    lines = [f"{request.method} {request.url} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One kept-alive HTTP/1.1 connection to `base_url`, opened on first use. `send`
    answers a request's `Answer`; a connection the server closed before answering is
    opened again and the request sent once more (the benchmarked operations are reads);
    a second failure, or an answer HTTP/1.1 does not allow, is a LoadError."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise LoadError(f"{base_url}: only http:// URLs")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        except OSError as exc:
            raise LoadError(f"{self.host}:{self.port}: {exc!r}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer
        return reader, writer

    async def send(self, raw: bytes) -> Answer:
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._exchange(raw)
            except _Stale as exc:
                await self.close()
                if attempt == 2:
                    raise LoadError(f"the connection closed twice before an answer: {exc}") from exc
            except TimeoutError as exc:
                await self.close()
                raise LoadError(f"no answer within {self.timeout:g} s") from exc
        raise AssertionError("unreachable")

    async def _exchange(self, raw: bytes) -> Answer:
        if self._writer is None or self._reader is None:
            reader, writer = await self._open()
        else:
            reader, writer = self._reader, self._writer
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _Stale(repr(exc)) from exc
        except asyncio.LimitOverrunError as exc:
            raise LoadError(f"an answer's headers are over {MAX_HEAD} bytes") from exc
        try:
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            version, status, *_ = status_line.split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise ValueError(status_line)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            code = int(status)
            body = await self._body(reader, headers)
        except (ValueError, asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise LoadError(f"a malformed or cut answer: {exc!r}") from exc
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(code, body)

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line[:-2].split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    if chunk != b"\r\n":
                        raise ValueError(
                            "chunk trailers (none of the benchmarked servers sends them)"
                        )
                    return b"".join(chunks)
                chunks.append(chunk[:-2])
        length = headers.get("content-length")
        if length is None:
            raise ValueError("an answer with neither Content-Length nor chunks")
        return await reader.readexactly(int(length))

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def _phase(
    connections: list[Connection],
    raw: bytes,
    *,
    seconds: float,
    check: Check,
    latencies: list[float] | None,
) -> float:
    deadline = time.perf_counter() + seconds

    async def worker(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            answer = await connection.send(raw)
            elapsed = (time.perf_counter() - started) * 1000
            problem = check(answer)
            if problem:
                raise LoadError(problem)
            if latencies is not None:
                latencies.append(elapsed)

    started = time.perf_counter()
    await asyncio.gather(*(worker(connection) for connection in connections))
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
    raw = request_bytes(base_url, request)
    connections = [Connection(base_url) for _ in range(concurrency)]
    try:
        if warmup > 0:
            await _phase(connections, raw, seconds=warmup, check=check, latencies=None)
        latencies: list[float] = []
        seconds = await _phase(connections, raw, seconds=duration, check=check, latencies=latencies)
    except LoadError as exc:
        raise LoadError(f"{request.method} {request.url}: {exc}") from exc
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
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
    raws = [request_bytes(base_url, request) for request in requests]

    async def worker(connection: Connection) -> None:
        nonlocal sent
        while sent < count:
            index = sent % len(raws)
            sent += 1
            problem = check(await connection.send(raws[index]))
            if problem:
                request = requests[index]
                raise LoadError(f"{request.method} {request.url}: {problem}")
            if progress is not None and sent % 1000 == 0:
                result = progress(sent)
                if asyncio.iscoroutine(result):
                    await result

    connections = [Connection(base_url) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(worker(connection) for connection in connections))
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    return sent
