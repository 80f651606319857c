"""bench/load.py: a kept-alive connection the server closed is retried once, not fatal."""

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
