"""Password reset through the mail interface: the outbox table by default, SMTP when set."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import (
    ERRORS,
    PASSWORD,
    TOKEN_CREATE,
    TOKEN_REFRESH,
    Calls,
    add_user,
    call,
    me,
    payload_errors,
    services_of,
    sign_in,
    stored_hash,
)
from aiosmtpd.controller import Controller
from conftest import make_client

from models.accounts.tables import mail_outbox, password_reset_tokens
from models.db import Database, utcnow

REQUEST = f"mutation($e: String!) {{ requestPasswordReset(email: $e) {{ {ERRORS} }} }}"
RESET = f"""mutation($t: String!, $p: String!) {{
  passwordReset(token: $t, newPassword: $p) {{ {ERRORS} }} }}"""
NEW_PASSWORD = "a brand new password"
TOKEN_IN_BODY = re.compile(r"token[:=] ?([A-Za-z0-9_\-]{32,})")


async def outbox(db: Database) -> list[Any]:
    async with db.read() as conn:
        return list((await conn.execute(sa.select(mail_outbox).order_by(mail_outbox.c.id))).all())


def token_of(body: str) -> str:
    match = TOKEN_IN_BODY.search(body)
    assert match, body
    return match.group(1)


async def request_reset(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    body = await call(client, REQUEST, {"e": email})
    assert "errors" not in body, body["errors"]
    payload: dict[str, Any] = body["data"]["requestPasswordReset"]
    return payload


async def reset(client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD) -> list[Any]:
    return payload_errors(await call(client, RESET, {"t": token, "p": password}), "passwordReset")


async def test_a_reset_request_answers_the_same_for_unknown_emails(fresh_db: Database) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        known = await request_reset(client, "Ann@Example.com")
        unknown = await request_reset(client, "nobody@example.com")
    assert known == unknown == {"errors": []}
    [message] = await outbox(fresh_db)
    assert (message.recipient, message.kind) == ("ann@example.com", "password_reset")
    assert message.subject and message.sent_at is None  # no SMTP configured: kept in the outbox
    assert len(token_of(message.body)) >= 32


async def test_password_reset_by_mail_signs_out_everywhere(
    fresh_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # The application's loggers in full; third-party ones from INFO (aiosqlite traces every
    # SQL parameter at DEBUG, which is a driver trace, not the application log).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="shopql")
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        sessions = [await sign_in(client, "ann@example.com") for _ in range(2)]
        assert await request_reset(client, "ann@example.com") == {"errors": []}
        [message] = await outbox(fresh_db)
        token = token_of(message.body)

        # A refused new password does not spend the token.
        assert await reset(client, token, "short") == [("newPassword", "PASSWORD_TOO_SHORT")]
        assert await reset(client, token) == []
        assert await reset(client, token, "yet another password") == [("token", "INVALID_TOKEN")]

        for session in sessions:
            assert await me(client, session["accessToken"]) == "UNAUTHENTICATED"
            body = await call(client, TOKEN_REFRESH, {"t": session["refreshToken"]})
            assert payload_errors(body, "tokenRefresh") == [("refreshToken", "INVALID_TOKEN")]
        old = await call(client, TOKEN_CREATE, {"email": "ann@example.com", "password": PASSWORD})
        assert payload_errors(old, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
        fresh = await sign_in(client, "ann@example.com", NEW_PASSWORD)
        assert await me(client, fresh["accessToken"]) == "ann@example.com"

    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    ).lower()
    assert "mail queued" in logged  # the log is captured at all
    assert token.lower() not in logged
    assert "ann@example.com" not in logged


async def test_only_the_newest_use_of_a_reset_counts(fresh_db: Database) -> None:
    """Two requests, two tokens: using one kills the other."""
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        for _ in range(2):
            await request_reset(client, "ann@example.com")
        first, second = (token_of(m.body) for m in await outbox(fresh_db))
        assert first != second
        assert await reset(client, second) == []
        assert await reset(client, first, "yet another password") == [("token", "INVALID_TOKEN")]
        await sign_in(client, "ann@example.com", NEW_PASSWORD)


@pytest.mark.parametrize(
    "token",
    ["unknown", "garbage", "long", "expired"],
)
async def test_a_bad_reset_token_changes_nothing(fresh_db: Database, token: str) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        await request_reset(client, "ann@example.com")
        real = token_of((await outbox(fresh_db))[0].body)
        given = {
            "unknown": real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB"),
            "garbage": "'; DROP TABLE users; -- \x00 ✓",
            "long": (real * 250)[:10_000],
            "expired": real,
        }[token]
        if token == "expired":
            async with fresh_db.transaction() as conn:
                await conn.execute(
                    password_reset_tokens.update().values(
                        expires_at=utcnow() - timedelta(seconds=1)
                    )
                )
        before = await stored_hash(fresh_db, "ann@example.com")
        assert await reset(client, given) == [("token", "INVALID_TOKEN")]
        assert await stored_hash(fresh_db, "ann@example.com") == before
        await sign_in(client, "ann@example.com")


async def test_a_made_up_reset_token_costs_no_hashing(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        hashes = Calls(services_of(client).passwords, "hash")
        assert await reset(client, "x" * 10_000) == [("token", "INVALID_TOKEN")]
    assert hashes.count == 0


# --------------------------------------------------------------------------- SMTP


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[Message] = []
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_reset_mail_is_sent_over_smtp(fresh_db: Database, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    await add_user(fresh_db, "ann@example.com")
    async with make_client(
        fresh_db,
        smtp_url=f"smtp://127.0.0.1:{port}",
        mail_from="shop@example.com",
        password_reset_url="https://shop.example.com/reset",
    ) as client:
        assert await request_reset(client, "ann@example.com") == {"errors": []}
        assert await request_reset(client, "nobody@example.com") == {"errors": []}
        await client.app.state.services.mailer.drain()  # sent after the answer
        [mail] = inbox.messages
        assert (mail["To"], mail["From"]) == ("ann@example.com", "shop@example.com")
        text = mail.get_payload(decode=True).decode()
        token = token_of(text)
        assert f"https://shop.example.com/reset?token={token}" in text
        [row] = await outbox(fresh_db)
        assert row.sent_at is not None and token_of(row.body) == token
        assert await reset(client, token) == []
        await sign_in(client, "ann@example.com", NEW_PASSWORD)


async def test_an_unreachable_smtp_server_keeps_the_mail_in_the_outbox(fresh_db: Database) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db, smtp_url=f"smtp://127.0.0.1:{free_port()}") as client:
        assert await request_reset(client, "ann@example.com") == {"errors": []}
    [row] = await outbox(fresh_db)
    assert row.sent_at is None and token_of(row.body)


async def test_reset_request_timing_does_not_depend_on_the_account(fresh_db: Database) -> None:
    inbox = Inbox(delay=0.3)  # a mail server that takes its time, as real ones do
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await add_user(fresh_db, "ann@example.com")
        async with make_client(fresh_db, smtp_url=f"smtp://127.0.0.1:{port}") as client:
            timings = {}
            for email in ("nobody@example.com", "ann@example.com"):
                started = time.perf_counter()
                await request_reset(client, email)
                timings[email] = time.perf_counter() - started
    finally:
        controller.stop()
    print({email: f"{seconds * 1000:.0f} ms" for email, seconds in timings.items()})
    assert timings["ann@example.com"] < timings["nobody@example.com"] + 0.15
