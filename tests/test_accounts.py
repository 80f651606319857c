"""Accounts through HTTP: registration, sign-in and sessions, throttling, tokens, password
hashing, addresses, staff visibility of the catalog and `shopql create-admin`."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from accounts_factory import (
    ADDRESS,
    ADDRESS_FIELDS,
    ADDRESS_ROW,
    ERRORS,
    PASSWORD,
    REGISTER,
    TOKEN_CREATE,
    TOKEN_REFRESH,
    TOKEN_REVOKE,
    Calls,
    add_user,
    call,
    client_from,
    count_rows,
    error_codes,
    gid,
    me,
    payload_errors,
    services_of,
    sign_in,
    stored_hash,
)
from argon2 import PasswordHasher
from catalog_reference import load_catalog
from conftest import TEST_SECRET, make_client

from models.accounts import tokens as tokens_module
from models.accounts.tables import PERMISSIONS, addresses, users
from models.db import Database, utcnow
from models.settings import QueryLimits

HASH_FORMAT = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[^$]+\$[^$]+$")


def register_input(**overrides: Any) -> dict[str, Any]:
    return {
        "email": "ann@example.com",
        "password": PASSWORD,
        "firstName": "Ann",
        "lastName": "Lee",
        **overrides,
    }


def hash_parameters(stored: str) -> tuple[int, int, int]:
    match = HASH_FORMAT.match(stored)
    assert match, stored
    m, t, p = (int(g) for g in match.groups())
    return m, t, p


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("password", ["x" * 8, "é" * 256], ids=["8-chars", "256-chars"])
async def test_register_then_sign_in_with_any_case_of_the_email(
    fresh_db: Database, password: str
) -> None:
    async with make_client(fresh_db) as client:
        body = await call(
            client, REGISTER, {"input": register_input(email="Ann@Example.COM", password=password)}
        )
        assert payload_errors(body, "accountRegister") == []
        user = body["data"]["accountRegister"]["user"]
        assert user["email"] == "ann@example.com"
        assert (user["firstName"], user["lastName"], user["isStaff"]) == ("Ann", "Lee", False)

        tokens = await sign_in(client, "ANN@example.com", password)
        assert tokens["user"] == {"id": user["id"], "email": "ann@example.com"}
        viewer = await call(
            client, "{ me { id email isStaff permissions } }", token=tokens["accessToken"]
        )
        assert viewer["data"]["me"] == {
            "id": user["id"],
            "email": "ann@example.com",
            "isStaff": False,
            "permissions": [],
        }


async def test_email_is_unique_whatever_its_case(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        first = await call(client, REGISTER, {"input": register_input(email="Ann@Example.COM")})
        assert payload_errors(first, "accountRegister") == []
        again = await call(client, REGISTER, {"input": register_input(email="ann@example.com")})
        assert payload_errors(again, "accountRegister") == [("email", "UNIQUE")]
        assert again["data"]["accountRegister"]["user"] is None
    assert await count_rows(fresh_db, users) == 1


BAD_REGISTRATIONS: dict[str, tuple[dict[str, str], list[tuple[str, str]]]] = {
    "no-at": ({"email": "not-an-email"}, [("email", "INVALID")]),
    "no-domain": ({"email": "a@"}, [("email", "INVALID")]),
    "300-char-email": ({"email": "a" * 288 + "@example.com"}, [("email", "INVALID")]),
    "double-at": ({"email": "ann@@x.com"}, [("email", "INVALID")]),
    "password-7": ({"password": "x" * 7}, [("password", "PASSWORD_TOO_SHORT")]),
    "password-257": ({"password": "x" * 257}, [("password", "PASSWORD_TOO_LONG")]),
    "long-first-name": ({"firstName": "a" * 101}, [("firstName", "INVALID")]),
    "nul-in-last-name": ({"lastName": "Lee\x00Robert"}, [("lastName", "INVALID")]),
    "escape-in-first-name": ({"firstName": "An\u001bn"}, [("firstName", "INVALID")]),
    "several-problems": (
        {"email": "a@", "password": "short"},
        [("email", "INVALID"), ("password", "PASSWORD_TOO_SHORT")],
    ),
}


async def test_register_rejects_bad_input_without_hashing_or_writing(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        hashes = Calls(services_of(client).passwords, "hash")
        for case, (overrides, expected) in BAD_REGISTRATIONS.items():
            body = await call(client, REGISTER, {"input": register_input(**overrides)})
            assert sorted(payload_errors(body, "accountRegister")) == sorted(expected), case
            assert body["data"]["accountRegister"]["user"] is None
            assert all(e["message"] for e in body["data"]["accountRegister"]["errors"])
            assert hashes.count == 0, case  # refused before any hashing work is spent
    assert await count_rows(fresh_db, users) == 0


WRONG_TYPES: dict[str, tuple[str, dict[str, Any] | None, str]] = {
    "int-password-inline": (
        'mutation { accountRegister(input: {email: "a@example.com", password: 123}) '
        "{ errors { code } } }",
        None,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    "missing-email-inline": (
        'mutation { accountRegister(input: {password: "long enough"}) { errors { code } } }',
        None,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    "int-password-variable": (REGISTER, {"input": register_input(password=123)}, "BAD_USER_INPUT"),
    "missing-email-variable": (REGISTER, {"input": {"password": PASSWORD}}, "BAD_USER_INPUT"),
    "null-email-variable": (REGISTER, {"input": register_input(email=None)}, "BAD_USER_INPUT"),
}


async def test_register_with_wrong_types_is_rejected_before_running(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        for case, (query, variables, code) in WRONG_TYPES.items():
            body = await call(client, query, variables)
            assert body.get("data") is None, case
            assert error_codes(body) == [code], case
    assert await count_rows(fresh_db, users) == 0


# --------------------------------------------------------------------------- sessions


async def test_sign_in_me_and_sign_out(fresh_db: Database) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        assert await me(client, None) is None
        laptop = await sign_in(client, "ann@example.com")
        phone = await sign_in(client, "ann@example.com")
        assert await me(client, laptop["accessToken"]) == "ann@example.com"

        body = await call(client, TOKEN_REVOKE, {"t": laptop["refreshToken"]})
        assert payload_errors(body, "tokenRevoke") == []
        # The very next request with the signed-out session's tokens fails.
        assert await me(client, laptop["accessToken"]) == "UNAUTHENTICATED"
        refreshed = await call(client, TOKEN_REFRESH, {"t": laptop["refreshToken"]})
        assert payload_errors(refreshed, "tokenRefresh") == [("refreshToken", "INVALID_TOKEN")]
        assert refreshed["data"]["tokenRefresh"]["accessToken"] is None
        again = await call(client, TOKEN_REVOKE, {"t": laptop["refreshToken"] + "x"})
        assert payload_errors(again, "tokenRevoke") == [("refreshToken", "INVALID_TOKEN")]

        # The other session of the same user is untouched.
        assert await me(client, phone["accessToken"]) == "ann@example.com"
        rotated = await call(client, TOKEN_REFRESH, {"t": phone["refreshToken"]})
        assert payload_errors(rotated, "tokenRefresh") == []


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(
    fresh_db: Database,
) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        session = await sign_in(client, "ann@example.com")
        other = await sign_in(client, "ann@example.com")

        first = (await call(client, TOKEN_REFRESH, {"t": session["refreshToken"]}))["data"]
        first = first["tokenRefresh"]
        assert first["errors"] == []
        assert first["refreshToken"] != session["refreshToken"]
        assert await me(client, first["accessToken"]) == "ann@example.com"
        second = (await call(client, TOKEN_REFRESH, {"t": first["refreshToken"]}))["data"]
        second = second["tokenRefresh"]
        assert second["errors"] == [] and second["refreshToken"] not in (
            first["refreshToken"],
            session["refreshToken"],
        )
        assert await me(client, second["accessToken"]) == "ann@example.com"

        # Someone replays the spent first refresh token: refused, and the session is over.
        replay = await call(client, TOKEN_REFRESH, {"t": session["refreshToken"]})
        assert payload_errors(replay, "tokenRefresh") == [("refreshToken", "INVALID_TOKEN")]
        assert await me(client, second["accessToken"]) == "UNAUTHENTICATED"
        newest = await call(client, TOKEN_REFRESH, {"t": second["refreshToken"]})
        assert payload_errors(newest, "tokenRefresh") == [("refreshToken", "INVALID_TOKEN")]

        assert await me(client, other["accessToken"]) == "ann@example.com"


async def test_password_change_signs_out_every_session(fresh_db: Database) -> None:
    await add_user(fresh_db, "ann@example.com")
    change = f"""mutation($old: String!, $new: String!) {{
      passwordChange(oldPassword: $old, newPassword: $new) {{
        accessToken refreshToken user {{ email }} {ERRORS} }} }}"""
    async with make_client(fresh_db) as client:
        anonymous = await call(client, change, {"old": PASSWORD, "new": "new password 1"})
        assert error_codes(anonymous) == ["UNAUTHENTICATED"]

        laptop = await sign_in(client, "ann@example.com")
        phone = await sign_in(client, "ann@example.com")
        before = await stored_hash(fresh_db, "ann@example.com")
        for old, new, expected in [
            ("wrong password", "new password 1", [("oldPassword", "INVALID_CREDENTIALS")]),
            (PASSWORD, "short", [("newPassword", "PASSWORD_TOO_SHORT")]),
        ]:
            body = await call(client, change, {"old": old, "new": new}, token=laptop["accessToken"])
            assert payload_errors(body, "passwordChange") == expected
            assert body["data"]["passwordChange"]["accessToken"] is None
        # Nothing changed: same hash, both sessions alive.
        assert await stored_hash(fresh_db, "ann@example.com") == before
        assert await me(client, phone["accessToken"]) == "ann@example.com"

        body = await call(
            client, change, {"old": PASSWORD, "new": "new password 1"}, token=laptop["accessToken"]
        )
        changed = body["data"]["passwordChange"]
        assert changed["errors"] == [] and changed["user"] == {"email": "ann@example.com"}
        for old_session in (laptop, phone):
            assert await me(client, old_session["accessToken"]) == "UNAUTHENTICATED"
            refresh = await call(client, TOKEN_REFRESH, {"t": old_session["refreshToken"]})
            assert payload_errors(refresh, "tokenRefresh") == [("refreshToken", "INVALID_TOKEN")]
        assert await me(client, changed["accessToken"]) == "ann@example.com"

        old = await call(client, TOKEN_CREATE, {"email": "ann@example.com", "password": PASSWORD})
        assert payload_errors(old, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
        await sign_in(client, "ann@example.com", "new password 1")


async def test_guessing_the_old_password_in_password_change_is_throttled(
    fresh_db: Database,
) -> None:
    """Someone holding a stolen access token cannot brute-force the password through it."""
    await add_user(fresh_db, "ann@example.com")
    change = f"""mutation($old: String!) {{
      passwordChange(oldPassword: $old, newPassword: "new password 1") {{ {ERRORS} }} }}"""
    async with make_client(fresh_db) as client:
        token = (await sign_in(client, "ann@example.com"))["accessToken"]
        for i in range(10):
            body = await call(client, change, {"old": f"guess {i}"}, token=token)
            assert payload_errors(body, "passwordChange") == [
                ("oldPassword", "INVALID_CREDENTIALS")
            ]
        body = await call(client, change, {"old": PASSWORD}, token=token)
        assert payload_errors(body, "passwordChange") == [("oldPassword", "RATE_LIMITED")]
        assert await me(client, token) == "ann@example.com"  # nothing changed
    assert PasswordHasher().verify(await stored_hash(fresh_db, "ann@example.com"), PASSWORD)


async def test_a_password_longer_than_the_maximum_never_signs_in(fresh_db: Database) -> None:
    longest = "p" * 255 + "!"
    await add_user(fresh_db, "ann@example.com", password=longest)
    async with make_client(fresh_db) as client:
        await sign_in(client, "ann@example.com", longest)
        assert await attempt(client, "ann@example.com", longest + "extra") == "INVALID_CREDENTIALS"


# --------------------------------------------------------------------------- enumeration


async def test_sign_in_answers_the_same_for_unknown_emails_and_wrong_passwords(
    fresh_db: Database,
) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        wrong = await call(client, TOKEN_CREATE, {"email": "ann@example.com", "password": "nope!!"})
        unknown = await call(
            client, TOKEN_CREATE, {"email": "nobody@example.com", "password": PASSWORD}
        )
    assert wrong["data"] == unknown["data"]
    assert payload_errors(wrong, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
    assert wrong["data"]["tokenCreate"]["user"] is None


async def test_sign_in_takes_as_long_for_unknown_emails_as_for_wrong_passwords(
    fresh_db: Database,
) -> None:
    await add_user(fresh_db, "ann@example.com")
    trials = 50
    async with make_client(fresh_db, login_max_failures=1000) as client:

        async def timed(email: str) -> float:
            variables = {"email": email, "password": "wrong password"}
            started = time.perf_counter()
            body = await call(client, TOKEN_CREATE, variables)
            elapsed = time.perf_counter() - started
            assert payload_errors(body, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
            return elapsed

        await timed("ann@example.com")
        await timed("warm-up@example.com")
        known: list[float] = []
        unknown: list[float] = []
        for i in range(trials):
            known.append(await timed("ann@example.com"))
            unknown.append(await timed(f"nobody{i}@example.com"))
    known_ms, unknown_ms = statistics.median(known) * 1000, statistics.median(unknown) * 1000
    print(f"median sign-in: known email {known_ms:.1f} ms, unknown email {unknown_ms:.1f} ms")
    assert max(known_ms, unknown_ms) <= 1.2 * min(known_ms, unknown_ms)


async def test_first_unknown_email_sign_in_spends_no_extra_hash(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        hashes = Calls(services_of(client).passwords, "hash")
        body = await call(
            client, TOKEN_CREATE, {"email": "nobody@example.com", "password": PASSWORD}
        )
        assert payload_errors(body, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
    assert hashes.count == 0


# --------------------------------------------------------------------------- throttling


async def attempt(client: httpx.AsyncClient, email: str, password: str) -> str | None:
    """The payload error code of one sign-in, None when it succeeded."""
    body = await call(client, TOKEN_CREATE, {"email": email, "password": password})
    codes = [code for _, code in payload_errors(body, "tokenCreate")]
    if not codes:
        assert body["data"]["tokenCreate"]["accessToken"]
        return None
    assert len(codes) == 1 and body["data"]["tokenCreate"]["accessToken"] is None
    return codes[0]


async def attempt_from(client: httpx.AsyncClient, ip: str, email: str, password: str) -> str | None:
    async with client_from(client, ip) as other:
        return await attempt(other, email, password)


async def test_account_locks_after_ten_failures_even_for_the_right_password(
    fresh_db: Database,
) -> None:
    await add_user(fresh_db, "ann@example.com")
    await add_user(fresh_db, "bob@example.com")
    async with make_client(fresh_db) as client:
        verifies = Calls(services_of(client).passwords, "verify")
        # Every attempt from its own address: only the per-account limit is in play.
        for i in range(10):
            assert await attempt_from(client, f"10.0.1.{i}", "ann@example.com", "wrong") == (
                "INVALID_CREDENTIALS"
            )
        assert verifies.count == 10
        started = time.perf_counter()
        assert await attempt_from(client, "10.0.1.99", "Ann@Example.com", PASSWORD) == (
            "RATE_LIMITED"
        )
        print(f"rate-limited answer in {(time.perf_counter() - started) * 1000:.1f} ms")
        assert verifies.count == 10  # over the limit, no password is checked
        # Another account from the same address is not affected.
        assert await attempt_from(client, "10.0.1.99", "bob@example.com", PASSWORD) is None


async def test_aliased_sign_ins_in_one_request_are_counted_one_by_one(fresh_db: Database) -> None:
    await add_user(fresh_db, "ann@example.com")
    fields = " ".join(
        f'a{i}: tokenCreate(email: "ann@example.com", password: "wrong{i}") '
        f"{{ accessToken {ERRORS} }}"
        for i in range(20)
    )
    # 20 aliases: more than the default limit (tests/test_limits.py)
    async with make_client(fresh_db, query_limits=QueryLimits(max_aliases=20)) as client:
        verifies = Calls(services_of(client).passwords, "verify")
        body = await call(client, f"mutation {{ {fields} }}")
        assert "errors" not in body
        codes = [[e["code"] for e in body["data"][f"a{i}"]["errors"]] for i in range(20)]
        assert codes == [["INVALID_CREDENTIALS"]] * 10 + [["RATE_LIMITED"]] * 10
        assert verifies.count == 10
        # The account itself is locked, from any address and with the right password.
        assert await attempt_from(client, "10.0.2.1", "ann@example.com", PASSWORD) == (
            "RATE_LIMITED"
        )


async def test_failures_over_many_emails_from_one_address_lock_that_address(
    fresh_db: Database,
) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        for i in range(10):
            assert await attempt(client, f"user{i}@example.com", "wrong") == "INVALID_CREDENTIALS"
        # The eleventh email, a real account with its right password: the address is locked.
        assert await attempt(client, "ann@example.com", PASSWORD) == "RATE_LIMITED"
        assert await attempt_from(client, "10.0.3.1", "ann@example.com", PASSWORD) is None


async def test_a_successful_sign_in_resets_the_account_counter(fresh_db: Database) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        ips = (f"10.0.4.{i}" for i in range(100))
        for _ in range(9):
            assert await attempt_from(client, next(ips), "ann@example.com", "wrong") == (
                "INVALID_CREDENTIALS"
            )
        assert await attempt_from(client, next(ips), "ann@example.com", PASSWORD) is None
        for _ in range(10):
            assert await attempt_from(client, next(ips), "ann@example.com", "wrong") == (
                "INVALID_CREDENTIALS"
            )
        assert await attempt_from(client, next(ips), "ann@example.com", PASSWORD) == (
            "RATE_LIMITED"
        )


# --------------------------------------------------------------------------- access tokens


def _claims_of(access: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access, options={"verify_signature": False})
    return claims


def _resign(access: str, secret: str = TEST_SECRET, **changes: Any) -> str:
    return jwt.encode({**_claims_of(access), **changes}, secret, algorithm="HS256")


def _flip_signature(access: str) -> str:
    head, payload, signature = access.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return ".".join([head, payload, signature[:middle] + swapped + signature[middle + 1 :]])


def _swap_payload(access: str) -> str:
    """Ann's signature on a payload naming the next user (Bob)."""
    head, _, signature = access.split(".")
    other = str(int(_claims_of(access)["sub"]) + 1)
    forged = jwt.encode({**_claims_of(access), "sub": other}, "x" * 32, algorithm="HS256")
    return ".".join([head, forged.split(".")[1], signature])


BAD_AUTHORIZATION = {
    "expired": lambda t: (
        "Bearer " + _resign(t, exp=int(time.time()) - 60, iat=int(time.time()) - 960)
    ),
    "tampered-signature": lambda t: "Bearer " + _flip_signature(t),
    "tampered-payload": lambda t: "Bearer " + _swap_payload(t),
    "other-secret": lambda t: "Bearer " + _resign(t, secret="another-secret-" + "x" * 40),
    "alg-none": lambda t: "Bearer " + jwt.encode(_claims_of(t), None, algorithm="none"),
    "not-an-access-token": lambda t: "Bearer " + _resign(t, typ="refresh"),
    "other-issuer": lambda t: "Bearer " + _resign(t, iss="someone-else"),
    "unknown-session": lambda t: "Bearer " + _resign(t, sid="0" * 32),
    "scheme-only": lambda t: "Bearer",
    "basic": lambda t: "Basic xyz",
    "other-scheme-valid-token": lambda t: "Token " + t,
    "two-segments": lambda t: "Bearer a.b",
    "5000-chars": lambda t: "Bearer " + "a" * 4993,
    "token-without-scheme": lambda t: t,
}


async def test_a_bad_authorization_header_is_unauthenticated_never_an_error(
    fresh_db: Database,
) -> None:
    ann = await add_user(fresh_db, "ann@example.com")
    assert await add_user(fresh_db, "bob@example.com") == ann + 1
    query = "{ products(first: 1) { totalCount } me { email } }"
    async with make_client(fresh_db) as client:
        access = (await sign_in(client, "ann@example.com"))["accessToken"]
        # The crafting itself is sound: the same claims, properly signed, are accepted.
        good = await call(client, query, authorization=f"bearer {_resign(access)}")
        assert good["data"]["me"] == {"email": "ann@example.com"}

        for kind, craft in BAD_AUTHORIZATION.items():
            response = await client.post(
                "/graphql", json={"query": query}, headers={"authorization": craft(access)}
            )
            assert response.status_code == 200, kind
            body = response.json()
            assert body["data"]["products"]["totalCount"] > 0, kind
            assert body["data"]["me"] is None, kind
            assert [(e["extensions"]["code"], e["path"]) for e in body["errors"]] == [
                ("UNAUTHENTICATED", ["me"])
            ], kind
        # The session itself was never harmed.
        assert await me(client, access) == "ann@example.com"


async def test_a_token_accepted_before_is_still_refused_once_expired_or_under_another_secret(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified token is remembered (its signature is checked once per process), but
    never past its expiry, and never for a server with another secret key."""
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        access = (await sign_in(client, "ann@example.com"))["accessToken"]
        assert await me(client, access) == "ann@example.com"
        assert await me(client, access) == "ann@example.com"  # remembered
    async with make_client(fresh_db, secret_key="another-secret-" + "y" * 40) as other:
        assert await me(other, access) == "UNAUTHENTICATED"
    expires = _claims_of(access)["exp"]
    monkeypatch.setattr(tokens_module, "_now", lambda: float(expires))
    async with make_client(fresh_db) as client:
        assert await me(client, access) == "UNAUTHENTICATED"
    monkeypatch.setattr(tokens_module, "_VERIFIED", {})
    monkeypatch.setattr(tokens_module, "_MAX_VERIFIED", 2)
    monkeypatch.setattr(tokens_module, "_now", lambda: float(expires - 5))
    async with make_client(fresh_db) as client:
        for n in range(5):
            assert await me(client, _resign(access, jti=f"j{n}")) == "ann@example.com"
            assert len(tokens_module._VERIFIED) <= 2


# --------------------------------------------------------------------------- password hashes


async def test_passwords_are_stored_as_argon2id_at_owasp_strength(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        body = await call(client, REGISTER, {"input": register_input()})
        assert payload_errors(body, "accountRegister") == []
    stored = await stored_hash(fresh_db, "ann@example.com")
    memory, time_cost, parallelism = hash_parameters(stored)
    assert memory >= 19 * 1024 and time_cost >= 2 and parallelism >= 1
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)


async def test_hashes_are_upgraded_on_sign_in_when_the_parameters_change(
    fresh_db: Database,
) -> None:
    async with make_client(fresh_db, argon2_time_cost=2) as old:
        body = await call(old, REGISTER, {"input": register_input()})
        assert payload_errors(body, "accountRegister") == []
    assert hash_parameters(await stored_hash(fresh_db, "ann@example.com"))[1] == 2

    async with make_client(fresh_db, argon2_time_cost=3) as new:
        assert await attempt(new, "ann@example.com", "wrong password") == "INVALID_CREDENTIALS"
        assert hash_parameters(await stored_hash(fresh_db, "ann@example.com"))[1] == 2
        await sign_in(new, "ann@example.com")
        upgraded = await stored_hash(fresh_db, "ann@example.com")
        assert hash_parameters(upgraded)[:2] == (19 * 1024, 3)
        # The upgraded hash verifies, and is not rewritten on every sign-in.
        await sign_in(new, "ann@example.com")
        assert await stored_hash(fresh_db, "ann@example.com") == upgraded


async def test_concurrent_sign_ins_queue_for_hashing_and_the_server_stays_responsive(
    fresh_db: Database,
) -> None:
    await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db, login_max_failures=100, hash_concurrency=2) as client:
        passwords = services_of(client).passwords

        async def health() -> float:
            await asyncio.sleep(0.02)  # while the sign-ins are queued
            started = time.perf_counter()
            response = await client.get("/healthz")
            assert response.json() == {"status": "ok"}
            return time.perf_counter() - started

        started = time.perf_counter()
        *results, health_seconds = await asyncio.gather(
            *(attempt(client, "ann@example.com", PASSWORD) for _ in range(12)), health()
        )
        total = time.perf_counter() - started
    print(f"12 sign-ins in {total * 1000:.0f} ms, /healthz in {health_seconds * 1000:.1f} ms")
    assert results == [None] * 12
    assert 1 <= passwords.peak <= 2
    assert health_seconds < total / 4


# --------------------------------------------------------------------------- addresses

ADDRESS_PAYLOAD = f"""
  address {{ {ADDRESS_FIELDS} }}
  user {{ addresses {{ id }} defaultShippingAddress {{ id }} }}
  {ERRORS}
"""
ADDRESS_CREATE = f"""
mutation($input: AddressInput!, $default: Boolean) {{
  addressCreate(input: $input, setDefaultShipping: $default) {{ {ADDRESS_PAYLOAD} }}
}}"""
ADDRESS_UPDATE = f"""
mutation($id: ID!, $input: AddressInput!, $default: Boolean) {{
  addressUpdate(id: $id, input: $input, setDefaultShipping: $default) {{ {ADDRESS_PAYLOAD} }}
}}"""
ADDRESS_DELETE = f"mutation($id: ID!) {{ addressDelete(id: $id) {{ {ADDRESS_PAYLOAD} }} }}"
MY_ADDRESSES = f"{{ me {{ addresses {{ {ADDRESS_FIELDS} }} defaultShippingAddress {{ id }} }} }}"


async def signed_in_customer(db: Database, client: httpx.AsyncClient) -> str:
    await add_user(db, "ann@example.com")
    return str((await sign_in(client, "ann@example.com"))["accessToken"])


async def test_address_book_with_a_default_shipping_address(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        token = await signed_in_customer(fresh_db, client)
        empty = await call(client, MY_ADDRESSES, token=token)
        assert empty["data"]["me"] == {"addresses": [], "defaultShippingAddress": None}

        async def mutate(query: str, field: str, **variables: Any) -> dict[str, Any]:
            body = await call(client, query, variables, token=token)
            assert payload_errors(body, field) == []
            payload: dict[str, Any] = body["data"][field]
            return payload

        first = await mutate(ADDRESS_CREATE, "addressCreate", input=ADDRESS)
        home = first["address"]
        assert home == {
            "id": home["id"],
            **ADDRESS,
            "companyName": "",
            "streetAddress2": "",
            "countryArea": "",
            "phone": "",
        }
        assert first["user"]["defaultShippingAddress"] == {"id": home["id"]}  # the first is default
        work = await mutate(ADDRESS_CREATE, "addressCreate", input={**ADDRESS, "city": "Work"})
        assert work["user"]["defaultShippingAddress"] == {"id": home["id"]}
        office = await mutate(
            ADDRESS_CREATE, "addressCreate", input={**ADDRESS, "city": "Office"}, default=True
        )
        office_id = office["address"]["id"]
        assert office["user"]["defaultShippingAddress"] == {"id": office_id}

        work_id = work["address"]["id"]
        changes = {"city": " Berlin ", "countryCode": "de", "phone": "+49 30 1234567"}
        updated = await mutate(
            ADDRESS_UPDATE, "addressUpdate", id=work_id, input={**ADDRESS, **changes}
        )
        assert updated["address"]["id"] == work_id
        expected = {"city": "Berlin", "countryCode": "DE", "phone": "+49 30 1234567"}
        assert {k: updated["address"][k] for k in expected} == expected
        assert updated["user"]["defaultShippingAddress"] == {"id": office_id}

        refused = await call(
            client,
            ADDRESS_UPDATE,
            {"id": work_id, "input": {**ADDRESS, "phone": "abc"}},
            token=token,
        )
        assert payload_errors(refused, "addressUpdate") == [("input.phone", "INVALID")]
        listed = await call(client, MY_ADDRESSES, token=token)
        assert [a for a in listed["data"]["me"]["addresses"] if a["id"] == work_id] == [
            updated["address"]
        ]

        deleted = await mutate(ADDRESS_DELETE, "addressDelete", id=office_id)
        assert deleted["address"]["id"] == office_id
        assert deleted["user"] == {
            "addresses": [{"id": home["id"]}, {"id": work_id}],
            "defaultShippingAddress": None,
        }
        moved = await mutate(
            ADDRESS_UPDATE, "addressUpdate", id=home["id"], input=ADDRESS, default=True
        )
        assert moved["user"]["defaultShippingAddress"] == {"id": home["id"]}
        final = await call(client, MY_ADDRESSES, token=token)
        assert [a["id"] for a in final["data"]["me"]["addresses"]] == [home["id"], work_id]
        assert final["data"]["me"]["defaultShippingAddress"] == {"id": home["id"]}


BAD_ADDRESSES: dict[str, tuple[dict[str, str], list[tuple[str, str]]]] = {
    "empty-first-name": ({"firstName": ""}, [("input.firstName", "REQUIRED")]),
    "blank-city": ({"city": "   "}, [("input.city", "REQUIRED")]),
    "two-missing": (
        {"streetAddress1": "", "postalCode": ""},
        [("input.streetAddress1", "REQUIRED"), ("input.postalCode", "REQUIRED")],
    ),
    "country-XX": ({"countryCode": "XX"}, [("input.countryCode", "INVALID")]),
    "country-3-letters": ({"countryCode": "USA"}, [("input.countryCode", "INVALID")]),
    "10000-char-city": ({"city": "x" * 10_000}, [("input.city", "INVALID")]),
    "phone-abc": ({"phone": "abc"}, [("input.phone", "INVALID")]),
    "hostile-postal-code": ({"postalCode": "<script>"}, [("input.postalCode", "INVALID")]),
    "nul-in-street": ({"streetAddress2": "Flat 1\x00"}, [("input.streetAddress2", "INVALID")]),
    "long-company": ({"companyName": "c" * 101}, [("input.companyName", "INVALID")]),
}


async def test_invalid_addresses_are_refused_and_nothing_is_stored(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        token = await signed_in_customer(fresh_db, client)
        for case, (changes, expected) in BAD_ADDRESSES.items():
            variables = {"input": {**ADDRESS, **changes}}
            body = await call(client, ADDRESS_CREATE, variables, token=token)
            assert sorted(payload_errors(body, "addressCreate")) == sorted(expected), case
            assert body["data"]["addressCreate"]["address"] is None, case
        for missing in ("firstName", "countryCode"):
            data = {k: v for k, v in ADDRESS.items() if k != missing}
            body = await call(client, ADDRESS_CREATE, {"input": data}, token=token)
            assert body.get("data") is None and error_codes(body) == ["BAD_USER_INPUT"], missing
            assert missing in body["errors"][0]["message"]
    assert await count_rows(fresh_db, addresses) == 0


HOSTILE = {
    "firstName": "<script>alert('x')</script>",
    "lastName": "O'Brien",
    "companyName": "'; DROP TABLE users; --",
    "streetAddress1": 'Robert"); DROP TABLE addresses;--',
    "streetAddress2": "{{7*7}} ${7*7} %s %n",
    "city": "Zürich 🏔 \u202e",
    "countryArea": "<img src=x onerror=alert(1)>",
}


async def test_hostile_strings_are_stored_and_returned_verbatim(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        token = await signed_in_customer(fresh_db, client)
        body = await call(client, ADDRESS_CREATE, {"input": {**ADDRESS, **HOSTILE}}, token=token)
        assert payload_errors(body, "addressCreate") == []
        created = body["data"]["addressCreate"]["address"]
        listed = (await call(client, MY_ADDRESSES, token=token))["data"]["me"]["addresses"]
    assert {k: created[k] for k in HOSTILE} == HOSTILE
    assert listed == [created]
    async with fresh_db.read() as conn:
        row = (await conn.execute(sa.select(addresses))).one()
    assert (row.company_name, row.street_address_1) == (
        HOSTILE["companyName"],
        HOSTILE["streetAddress1"],
    )
    assert await count_rows(fresh_db, users) == 1


async def test_an_account_holds_at_most_100_addresses(fresh_db: Database) -> None:
    user_id = await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        token = (await sign_in(client, "ann@example.com"))["accessToken"]
        now = utcnow()
        async with fresh_db.transaction() as conn:
            await conn.execute(
                addresses.insert(),
                [
                    {**ADDRESS_ROW, "user_id": user_id, "created_at": now, "updated_at": now}
                    for _ in range(99)
                ],
            )
        hundredth = await call(client, ADDRESS_CREATE, {"input": ADDRESS}, token=token)
        assert payload_errors(hundredth, "addressCreate") == []
        over = await call(client, ADDRESS_CREATE, {"input": ADDRESS}, token=token)
    assert payload_errors(over, "addressCreate") == [(None, "LIMIT_EXCEEDED")]
    assert over["data"]["addressCreate"]["address"] is None
    assert await count_rows(fresh_db, addresses, addresses.c.user_id == user_id) == 100


async def test_concurrent_first_addresses_all_succeed_with_one_default(fresh_db: Database) -> None:
    user_id = await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        token = (await sign_in(client, "ann@example.com"))["accessToken"]
        bodies = await asyncio.gather(
            *(call(client, ADDRESS_CREATE, {"input": ADDRESS}, token=token) for _ in range(8))
        )
        assert [error_codes(b) for b in bodies] == [[]] * 8
        assert all(payload_errors(b, "addressCreate") == [] for b in bodies)
        mine = (await call(client, MY_ADDRESSES, token=token))["data"]["me"]
    assert len(mine["addresses"]) == 8 and mine["defaultShippingAddress"] is not None
    default = addresses.c.user_id == user_id, addresses.c.is_default_shipping.is_(True)
    assert await count_rows(fresh_db, addresses, *default) == 1


async def test_concurrent_creates_cannot_pass_the_address_limit(fresh_db: Database) -> None:
    user_id = await add_user(fresh_db, "ann@example.com")
    now = utcnow()
    async with fresh_db.transaction() as conn:
        await conn.execute(
            addresses.insert(),
            [
                {**ADDRESS_ROW, "user_id": user_id, "created_at": now, "updated_at": now}
                for _ in range(95)
            ],
        )
    async with make_client(fresh_db) as client:
        token = (await sign_in(client, "ann@example.com"))["accessToken"]
        bodies = await asyncio.gather(
            *(call(client, ADDRESS_CREATE, {"input": ADDRESS}, token=token) for _ in range(20))
        )
    codes = sorted(code for b in bodies for _, code in payload_errors(b, "addressCreate"))
    assert codes == ["LIMIT_EXCEEDED"] * 15
    assert await count_rows(fresh_db, addresses, addresses.c.user_id == user_id) == 100


async def test_address_mutations_need_a_sign_in(fresh_db: Database) -> None:
    user_id = await add_user(fresh_db, "ann@example.com")
    async with make_client(fresh_db) as client:
        body = await call(client, ADDRESS_CREATE, {"input": ADDRESS})
    assert body["data"] is None and error_codes(body) == ["UNAUTHENTICATED"]
    assert await count_rows(fresh_db, addresses, addresses.c.user_id == user_id) == 0


# --------------------------------------------------------------------------- staff and the catalog

CATALOG_AS_VIEWER = """
query($id: ID!, $slug: String!, $sku: String!, $variant: ID!, $category: ID!) {
  products(first: 1) { totalCount }
  product(id: $id) { id isPublished }
  bySlug: product(slug: $slug) { id }
  node(id: $id) { id }
  nodes(ids: [$id]) { id }
  variant(sku: $sku) { id product { id } }
  variantById: variant(id: $variant) { id }
  category(id: $category) { products(first: 100) { totalCount nodes { id } } }
}"""


@pytest.mark.parametrize(
    ("viewer", "sees_unpublished"),
    [("manager", True), ("staff-without-products", False), ("customer", False), ("anon", False)],
)
async def test_only_staff_with_manage_products_see_unpublished_products(
    fresh_db: Database, viewer: str, sees_unpublished: bool
) -> None:
    ref = await load_catalog(fresh_db)
    hidden = next(p for p in ref.unpublished() if p.variants and p.category_id is not None)
    in_category = [
        p for p in ref.products.values() if p.category_id in ref.subtree(hidden.category_id)
    ]
    permissions = {
        "manager": ["MANAGE_PRODUCTS"],
        "staff-without-products": [p for p in PERMISSIONS if p != "MANAGE_PRODUCTS"],
    }
    if viewer != "anon":
        await add_user(
            fresh_db,
            "viewer@example.com",
            is_staff=viewer in permissions,
            permissions=permissions.get(viewer, ()),
        )
    product_id = gid("Product", hidden.id)
    variables = {
        "id": product_id,
        "slug": hidden.slug,
        "sku": hidden.variants[0]["sku"],
        "variant": gid("ProductVariant", hidden.variants[0]["id"]),
        "category": gid("Category", hidden.category_id),
    }
    async with make_client(fresh_db) as client:
        token = None
        if viewer != "anon":
            token = (await sign_in(client, "viewer@example.com"))["accessToken"]
        body = await call(client, CATALOG_AS_VIEWER, variables, token=token)
    assert "errors" not in body, body["errors"]
    data = body["data"]
    listed = {n["id"] for n in data["category"]["products"]["nodes"]}
    if sees_unpublished:
        assert data["products"]["totalCount"] == len(ref.products)
        assert data["product"] == {"id": product_id, "isPublished": False}
        assert data["bySlug"] == data["node"] == {"id": product_id}
        assert data["nodes"] == [{"id": product_id}]
        assert data["variant"]["product"] == {"id": product_id}
        assert data["variantById"] == {"id": variables["variant"]}
        assert data["category"]["products"]["totalCount"] == len(in_category)
        assert product_id in listed
    else:
        assert data["products"]["totalCount"] == len(ref.visible())
        assert data["product"] is data["bySlug"] is data["node"] is None
        assert data["nodes"] == [None]
        assert data["variant"] is data["variantById"] is None
        assert data["category"]["products"]["totalCount"] == len(
            [p for p in in_category if p.is_published]
        )
        assert product_id not in listed


# --------------------------------------------------------------------------- create-admin

SHOPQL = str(Path(sys.executable).parent / "shopql")
skip_on_postgres = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")), reason="the CLI runs on the embedded SQLite file"
)


def create_admin(tmp_path: Path, email: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    env |= {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shop.db", "SECRET_KEY": TEST_SECRET}
    return subprocess.run(
        [SHOPQL, "create-admin", "--email", email, "--password-stdin"],
        input=password + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@skip_on_postgres
async def test_create_admin_makes_a_staff_user_with_every_permission(tmp_path: Path) -> None:
    done = await asyncio.to_thread(create_admin, tmp_path, "Admin@Example.com", PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "admin@example.com" in done.stderr

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    try:
        async with make_client(db) as client:
            tokens = await sign_in(client, "admin@example.com")
            body = await call(
                client, "{ me { email isStaff permissions } }", token=tokens["accessToken"]
            )
    finally:
        await db.dispose()
    assert body["data"]["me"] == {
        "email": "admin@example.com",
        "isStaff": True,
        "permissions": sorted(PERMISSIONS),
    }

    again = await asyncio.to_thread(create_admin, tmp_path, "admin@EXAMPLE.com", "another password")
    assert again.returncode != 0
    assert "exists already" in again.stderr and "Traceback" not in again.stderr


@skip_on_postgres
@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("admin@example.com", "short", "at least 8 characters"),
        ("admin@", PASSWORD, "valid email"),
    ],
    ids=["short-password", "bad-email"],
)
async def test_create_admin_refuses_bad_credentials(
    tmp_path: Path, email: str, password: str, message: str
) -> None:
    done = await asyncio.to_thread(create_admin, tmp_path, email, password)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    db_file = tmp_path / "shop.db"
    if db_file.exists():
        db = Database(f"sqlite+aiosqlite:///{db_file}")
        try:
            assert await count_rows(db, users) == 0
        finally:
            await db.dispose()
