"""schema/server.py: `shopql serve` writes each answer's headers and body in one write,
and stays a correct HTTP/1.1 server (keep-alive, pipelining, 100-continue, Connection:
close) over a real socket."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import orjson
from live_server import live_server

from schema.server import OneWriteTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def test_headers_wait_for_the_body_and_leave_together() -> None:
    fake = FakeTransport()
    transport = OneWriteTransport(fake)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert fake.writes == []
    transport.write(b"{}")
    assert fake.writes == [HEAD + b"{}"]
    # Later writes of the response (chunks) go out as they come, even one that looks
    # like a header block (a body may hold anything)
    transport.write(b"more")
    transport.write(HEAD)
    assert fake.writes == [HEAD + b"{}", b"more", HEAD]


def test_interim_answers_and_anything_else_are_not_held() -> None:
    fake = FakeTransport()
    transport = OneWriteTransport(fake)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert fake.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    # Held headers are written before the connection closes...
    transport.write(HEAD)
    transport.close()
    assert fake.writes[-1] == HEAD and fake.closed
    # ...and before anything else is asked of the transport
    fake = FakeTransport()
    transport = OneWriteTransport(fake)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
    assert fake.writes == [HEAD]
    assert not transport.is_closing()


def _answers(sock: socket.socket, count: int) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Read `count` Content-Length answers off `sock`."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers: {buffer!r}"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk
            buffer += chunk
        answers.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    assert buffer == b""
    return answers


def _post(body: bytes, *extra: bytes) -> bytes:
    head = [b"POST /graphql HTTP/1.1", b"Host: shop.test", b"Content-Type: application/json"]
    head += [b"Content-Length: " + str(len(body)).encode(), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_shopql_serve_speaks_http_1_1(catalog_url: str, tmp_path: Path) -> None:
    query = orjson.dumps({"query": "{ products(first: 2) { nodes { slug } } }"})
    with (
        live_server(catalog_url, tmp_path) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        # Keep-alive, then two pipelined requests: answered in order on one connection
        sock.sendall(_post(query))
        sock.sendall(_post(query) + _post(b'{"query": "{ __typename }"}'))
        answers = _answers(sock, 3)
        assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 3
        first, _, typename = (orjson.loads(body) for _, _, body in answers)
        assert len(first["data"]["products"]["nodes"]) == 2
        assert typename["data"] == {"__typename": "Query"}
        assert all(len(headers[b"x-request-id"]) == 32 for _, headers, _ in answers)

        # Expect: 100-continue: the interim answer comes before the body is sent
        sock.sendall(_post(query, b"Expect: 100-continue")[: -len(query)])
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(query)
        ((status, _, body),) = _answers(sock, 1)
        assert status == b"HTTP/1.1 200 OK" and b'"nodes"' in body

        # Connection: close: the whole answer, then the server closes
        sock.sendall(_post(query, b"Connection: close"))
        ((status, headers, body),) = _answers(sock, 1)
        assert status == b"HTTP/1.1 200 OK" and headers[b"connection"] == b"close"
        assert orjson.loads(body)["data"]["products"]["nodes"]
        assert sock.recv(1) == b""
