"""A real webhook receiver for tests: a minimal HTTP/1.1 server on 127.0.0.1 (random port)
that verifies signatures the way the README tells receivers to, fails each delivery's
first `fail_first` attempts with a 500, optionally answers slowly, and counts what it
accepted per delivery."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

TOLERANCE = 300  # seconds a timestamp may be off (replay protection)


def verify_signature(
    secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None
) -> bool:
    """The README's receiver check: HMAC-SHA256 over "<timestamp>.<body>", compared in
    constant time, timestamp within 5 minutes."""
    timestamp = headers.get("shopql-timestamp", "")
    signature = headers.get("shopql-signature", "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("v1=" + mac.hexdigest(), signature)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    signature_ok: bool

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    @property
    def delivery(self) -> str:
        return self.headers.get("shopql-delivery", "")


@dataclass
class Receiver:
    secret: str
    fail_first: int = 0
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.status == 200]

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def wait_for(self, predicate: Any, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()  # request line
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            ok = verify_signature(self.secret, headers, body)
            earlier = sum(1 for r in self.requests if r.delivery == headers.get("shopql-delivery"))
            status = 500 if earlier < self.fail_first or not ok else 200
            if self.delay:
                await asyncio.sleep(self.delay)
            self.requests.append(Received(headers, body, status, ok))
            self._changed.set()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
