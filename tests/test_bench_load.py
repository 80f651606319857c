"""bench/load.py: a kept-alive connection the server closed is retried once, not fatal;
bench/harness.py times the systems it compares in alternating rounds."""

from __future__ import annotations

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
