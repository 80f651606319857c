"""Where webhooks may point: http(s) URLs on public addresses only (no SSRF into the
shop's own network), checked when an endpoint is saved AND again at every connection
(DNS answers change), unless SHOPQL_WEBHOOK_ALLOW_PRIVATE=1 (development, tests).

The connection-time check lives in the HTTP client's network backend: the host is
resolved once, every address it resolves to must be public, and the socket connects to
that checked address (TLS still verifies the certificate against the host name), so a
DNS answer cannot change between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

MAX_URL = 2048
RESOLVE_TIMEOUT = 5.0
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class UnsafeTarget(Exception):
    """A URL or address webhooks may not be sent to; the message is safe to show."""


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an acceptable webhook URL, or UnsafeTarget with the reason."""
    if not 0 < len(url) <= MAX_URL:
        raise UnsafeTarget(f"a URL has 1 to {MAX_URL} characters")
    if _CONTROL.search(url) or any(0xD800 <= ord(c) <= 0xDFFF for c in url):
        raise UnsafeTarget("a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeTarget("enter an absolute http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget("enter an absolute http(s) URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeTarget("a webhook URL may not contain credentials")
    if parts.fragment:
        raise UnsafeTarget("a webhook URL has no #fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    """A globally routable unicast address (IPv4-mapped IPv6 judged as its IPv4)."""
    ip: Any = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_global
        and not (
            ip.is_private
            or ip.is_loopback
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
        )
    )


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise UnsafeTarget("the host name does not resolve") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(addresses: Iterable[str]) -> None:
    found = list(addresses)
    if not found:
        raise UnsafeTarget("the host name does not resolve")
    if not all(is_public(a) for a in found):
        raise UnsafeTarget("webhooks may not point at private, loopback or reserved addresses")


async def check_url(url: str, *, allow_private: bool) -> None:
    """UnsafeTarget unless `url` is an http(s) URL webhooks may be sent to."""
    host, port = parse_url(url)
    if not allow_private:
        check_addresses(await resolve(host, port))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, refusing connections to non-public addresses."""

    def __init__(self, *, allow_private: bool) -> None:
        from httpcore._backends.auto import AutoBackend

        self._inner = AutoBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        target = host
        if not self._allow_private:
            try:
                addresses = await resolve(host, port)
                check_addresses(addresses)
            except UnsafeTarget as exc:
                raise httpcore.ConnectError(str(exc)) from None
            target = addresses[0]
        return await self._inner.connect_tcp(
            target,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
