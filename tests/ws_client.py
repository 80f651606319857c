"""A minimal `graphql-transport-ws` client over the `websockets` package, for tests
against a real server (tests/live_server.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from live_server import LiveServer
from websockets.asyncio.client import ClientConnection

PROTOCOL = "graphql-transport-ws"


class Ws:
    """A minimal graphql-transport-ws client over the `websockets` package."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.ids = iter(str(i) for i in range(1, 10_000))

    async def send(self, message: Any) -> None:
        await self.conn.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, within: float = 10) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.conn.recv(), within)
        assert isinstance(frame, str), f"the protocol sends text frames, got {frame!r}"
        message: dict[str, Any] = json.loads(frame)
        return message

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op_id = next(self.ids)
        payload = {"query": query, "variables": variables}
        await self.send({"id": op_id, "type": "subscribe", "payload": payload})
        return op_id

    async def expect_next(self, op_id: str) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == "next" and message["id"] == op_id, message
        assert "errors" not in message["payload"], message
        data: dict[str, Any] = message["payload"]["data"]
        return data

    async def expect_error(self, op_id: str) -> list[dict[str, Any]]:
        message = await self.recv()
        assert message["type"] == "error" and message["id"] == op_id, message
        errors: list[dict[str, Any]] = message["payload"]
        return errors

    async def closed_with(self) -> int:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(self.conn.recv(), 10)
        code = closed.value.rcvd.code if closed.value.rcvd else -1
        return int(code)


async def connect(
    server: LiveServer,
    *,
    token: str | None = None,
    payload: Any = None,
    origin: str | None = None,
    protocols: tuple[str, ...] = (PROTOCOL,),
    init: bool = True,
) -> Ws:
    conn = await websockets.connect(
        server.ws_url,
        subprotocols=list(protocols),  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        open_timeout=10,
    )
    ws = Ws(conn)
    if init:
        if payload is None and token is not None:
            payload = {"authorization": f"Bearer {token}"}
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await ws.send(message)
    return ws


async def acked(server: LiveServer, **kw: Any) -> Ws:
    ws = await connect(server, **kw)
    assert await ws.recv() == {"type": "connection_ack"}
    return ws
