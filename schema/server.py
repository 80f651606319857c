"""uvicorn's httptools protocol, with each response's headers and first body bytes sent in
one write.

uvicorn writes a response's header block as soon as the application sends
`http.response.start`, and its body on `http.response.body`: two `send` system calls and,
with TCP_NODELAY, two TCP segments for every answer, which the client then reads in two
wakeups. For an API whose answers are one JSON body that is a good part of the cost of
a small request on the machine (product detail: ~3% of the server's CPU in `send`, and
the client's second read). Here the header block waits for the next write of the same
response (the body: Starlette sends it straight after the start, without yielding to
the event loop) and both go out together. What changes nothing else:

- a `100 Continue` interim answer is written at once (the client waits for it);
- the held headers are written before the response's connection is closed, and when
  anything but a write comes first they are written as they are;
- WebSocket upgrades, pipelining and flow control are uvicorn's own (only the
  response's writes go through here).

Used by `shopql serve` and by bench/run's Python servers (`--http
schema.server:HttpProtocol`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINE = b"HTTP/1."
_INTERIM = (b"HTTP/1.1 1", b"HTTP/1.0 1")  # 1xx answers: sent at once
_END_OF_HEADERS = b"\r\n\r\n"


class OneWriteTransport:
    """A response's transport that holds its header block (the response's first write
    but an interim answer) until the next write."""

    __slots__ = ("_held", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._started = False  # the header block was written (or held)

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif (
            not self._started
            and data.startswith(_STATUS_LINE)
            and data.endswith(_END_OF_HEADERS)
            and not data.startswith(_INTERIM)
        ):
            self._started = True
            self._held = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Anything else a response asks of its transport: the held headers go first
        self.flush()
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose responses write through `OneWriteTransport`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle.transport) is not OneWriteTransport:
            cycle.transport = OneWriteTransport(cycle.transport)  # type: ignore[assignment]
