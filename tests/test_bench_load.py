"""bench/load.py: a kept-alive connection the server closed is retried once, not fatal;
bench/harness.py times the systems it compares in alternating rounds."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from bench import load


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://bench.test", transport=handler)


async def test_a_connection_closed_under_a_request_is_retried_once() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={"data": {}})

    async with _client(httpx.MockTransport(handler)) as http:
        response = await load.send(http, load.Request("GET", "/graphql"))
    assert response.status_code == 200
    assert calls == ["/graphql", "/graphql"]


@pytest.mark.parametrize(
    ("error", "attempts", "message"),
    [
        # a server that keeps failing stops the run, after one retry
        (httpx.RemoteProtocolError("Server disconnected"), 2, "RemoteProtocolError twice"),
        # a refused connection is not a stale one: not retried
        (httpx.ConnectError("refused"), 1, "ConnectError"),
    ],
)
async def test_a_failing_server_stops_the_run(
    error: httpx.TransportError, attempts: int, message: str
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise error

    async with _client(httpx.MockTransport(handler)) as http:
        with pytest.raises(load.LoadError, match=message):
            await load.send(http, load.Request("GET", "/graphql"))
    assert calls == attempts


async def test_systems_are_timed_in_alternating_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/harness.py: each round times every system for its share of the duration, in
    an order rotated by one per round; a system's rounds are pooled."""
    from bench import harness

    calls: list[tuple[str, int, float, float]] = []

    async def fake_run(
        base_url: str, request: load.Request, *, concurrency: int, duration: float, warmup: float
    ) -> load.LoadResult:
        calls.append((base_url, concurrency, duration, warmup))
        latency = {"http://a": 1.0, "http://b": 2.0, "http://c": 3.0}[base_url]
        return load.LoadResult(concurrency, [latency + len(calls) / 1000], duration)

    monkeypatch.setattr(harness.load, "run", fake_run)
    servers = {
        name: harness.Server(name, None, f"http://{name}", None)  # type: ignore[arg-type]
        for name in ("a", "b", "c")
    }
    op = harness.operations(product_slug="p", user_id=1)[0]
    args = harness.parse_args(["--duration", "6", "--warmup", "2", "--rounds", "3"])
    requests = {name: load.Request("POST", "/graphql") for name in servers}
    cells = await harness.measure_interleaved(
        op, "SQLite", servers, requests, {name: "1" for name in servers}, args
    )
    order = [url[-1] for url, concurrency, _, _ in calls if concurrency == 1]
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [url[-1] for url, concurrency, _, _ in calls if concurrency > 1] == order
    assert {duration for _, _, duration, _ in calls} == {2.0}
    warmups = [warmup for _, concurrency, _, warmup in calls if concurrency == 1]
    assert warmups == [2.0] * 3 + [harness.ROUND_WARMUP] * 6
    by_system = {cell.system: cell for cell in cells}
    assert [by_system[name].low.n for name in "abc"] == [3, 3, 3]
    assert by_system["b"].low.median == pytest.approx(2.0, abs=0.01)
    assert by_system["c"].high.seconds == 6.0 and by_system["c"].high.rps == 0.5


# --------------------------------------------------------------------------- raw client


class _Server:
    """A local HTTP/1.1 server answering with `answers` in turn (the bytes to write, or
    None: close the connection without answering); records what it received."""

    def __init__(self, answers: list[bytes | None], *, repeat_last: bool = True) -> None:
        self.answers = answers
        self.repeat_last = repeat_last
        self.received: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    def _next(self) -> bytes | None:
        if len(self.answers) > 1 or not self.repeat_last:
            return self.answers.pop(0)
        return self.answers[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.received.append(head + await reader.readexactly(length))
                answer = self._next()
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()


OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{"data":{}}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'4\r\n{"da\r\n7;ext=1\r\nta":{}}\r\n0\r\n\r\n'
)


async def test_the_raw_client_reads_sized_and_chunked_answers_on_one_connection() -> None:
    server = _Server([OK, CHUNKED, OK])
    async with server as base_url:
        connection = load.Connection(base_url)
        request = load.Request("POST", "/graphql", b'{"query":"{ a }"}', {"x-test": "1"})
        raw = load.request_bytes(base_url, request)
        answers = [await connection.send(raw) for _ in range(3)]
        await connection.close()
    assert [a.content for a in answers] == [b'{"data":{}}'] * 3
    assert all(load.ok_json(a) is None for a in answers)
    assert server.connections == 1  # kept alive
    first = server.received[0]
    assert first.startswith(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nx-test: 1\r\n" in first and b"\r\nContent-Length: 17\r\n" in first
    assert first.endswith(b'\r\n\r\n{"query":"{ a }"}')


async def test_the_raw_client_retries_a_closed_connection_once() -> None:
    # The server lets the kept-alive connection go after one answer: sent again, answered
    server = _Server([OK, None, OK], repeat_last=False)
    async with server as base_url:
        connection = load.Connection(base_url)
        raw = load.request_bytes(base_url, load.Request("GET", "/graphql"))
        assert (await connection.send(raw)).status_code == 200
        assert (await connection.send(raw)).status_code == 200
        await connection.close()
    assert server.connections == 2 and len(server.received) == 3

    # A server that never answers stops the run
    async with _Server([None]) as base_url:
        connection = load.Connection(base_url)
        with pytest.raises(load.LoadError, match="closed twice"):
            await connection.send(load.request_bytes(base_url, load.Request("GET", "/")))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno", "HTTP 500: no"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n{"errors":[{"m":"bad"}]}', "errors in"),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", "neither Content-Length nor chunks"),
        (b"SMTP ready\r\n\r\n", "malformed"),
    ],
)
async def test_a_failing_answer_stops_a_timed_run(answer: bytes, message: str) -> None:
    async with _Server([answer]) as base_url:
        with pytest.raises(load.LoadError, match=message):
            await load.run(
                base_url, load.Request("GET", "/graphql"), concurrency=2, duration=0.2, warmup=0
            )


async def test_a_timed_run_and_a_counted_run_measure_every_answer() -> None:
    server = _Server([OK])
    async with server as base_url:
        timed = await load.run(
            base_url, load.Request("GET", "/a"), concurrency=4, duration=0.3, warmup=0.1
        )
        sent = await load.run_count(
            base_url,
            [load.Request("GET", "/b"), load.Request("GET", "/c")],
            count=50,
            concurrency=3,
        )
    assert timed.n > 10 and all(latency > 0 for latency in timed.latencies_ms)
    assert timed.concurrency == 4 and 0.3 <= timed.seconds < 1.0
    assert sent == 50
    paths = [received.split(b" ")[1] for received in server.received]
    assert paths.count(b"/b") == 25 and paths.count(b"/c") == 25
    assert server.connections == 4 + 3
