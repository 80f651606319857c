"""Accounts resolvers: registration, tokens, passwords, addresses.

Expected failures come back as `Problem`s in the payload; a missing sign-in where one is
required raises NotAuthenticated (top-level UNAUTHENTICATED).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from email_validator import EmailNotValidError, validate_email

from models import telemetry
from models.accounts import queries as q
from models.accounts.passwords import PasswordPolicyError, check_policy
from models.accounts.queries import ADDRESS_FIELDS, AddressRecord, EmailTaken, UserRecord
from models.accounts.tokens import InvalidToken, create_access_token, verify_access_token
from models.countries import COUNTRY_CODES
from models.errors import InvalidInput, Problem
from resolvers import ids
from resolvers.context import Context

logger = logging.getLogger("shopql.accounts")

MAX_ADDRESSES = 100
MAX_EMAIL = 254
NAME_LIMIT = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().\-]{3,30}$")
_POSTAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 \-]{0,19}$")
INVALID_CREDENTIALS = "wrong email or password"


@dataclass
class AuthResult:
    user: UserRecord | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    errors: list[Problem] = field(default_factory=list)


@dataclass
class AddressResult:
    address: AddressRecord | None = None
    user: UserRecord | None = None
    errors: list[Problem] = field(default_factory=list)


def _fail(code: str, message: str, field: str | None = None) -> list[Problem]:
    if code == "RATE_LIMITED":
        telemetry.rate_limited("accounts")
    return [Problem(code, message, field)]


def normalize_email(raw: str, *, field: str = "email") -> str | Problem:
    """Validated (syntax only, no DNS) and lower-cased: emails are case-insensitive here."""
    if len(raw) > MAX_EMAIL:
        return Problem("INVALID", f"an email address has at most {MAX_EMAIL} characters", field)
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        return Problem("INVALID", "enter a valid email address", field)
    return checked.normalized.lower()


def _name(value: str | None, field: str, problems: list[Problem]) -> str:
    text = (value or "").strip()
    if len(text) > NAME_LIMIT:
        problems.append(Problem("INVALID", f"at most {NAME_LIMIT} characters", field))
    elif _CONTROL.search(text):
        problems.append(Problem("INVALID", "contains control characters", field))
    return text


def _password_problem(password: str, field: str) -> Problem | None:
    try:
        check_policy(password)
    except PasswordPolicyError as exc:
        return Problem(exc.code, exc.message, field)
    return None


async def _sign_in(ctx: Context, conn: Any, user_id: int) -> AuthResult:
    tokens = await q.start_session(
        conn, user_id=user_id, refresh_ttl=ctx.settings.refresh_token_ttl
    )
    access = create_access_token(
        secret=ctx.settings.secret_key,
        user_id=user_id,
        session_id=tokens.session_id,
        ttl=ctx.settings.access_token_ttl,
    )
    user = (await q.users_by_ids(conn, ids=[user_id]))[user_id]
    ctx.sign_in(user, tokens.session_id)
    return AuthResult(user=user, access_token=access, refresh_token=tokens.refresh_token)


# --------------------------------------------------------------------------- register, sign in


class RegisterInput(Protocol):
    @property
    def email(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def first_name(self) -> str | None: ...
    @property
    def last_name(self) -> str | None: ...


async def account_register(ctx: Context, data: RegisterInput) -> AuthResult:
    problems: list[Problem] = []
    email = normalize_email(data.email)
    if isinstance(email, Problem):
        problems.append(email)
    if (bad := _password_problem(data.password, "password")) is not None:
        problems.append(bad)
    first = _name(data.first_name, "firstName", problems)
    last = _name(data.last_name, "lastName", problems)
    if problems:
        return AuthResult(errors=problems)
    assert isinstance(email, str)
    password_hash = await ctx.services.passwords.hash(data.password)
    try:
        async with ctx.db.transaction() as conn:
            user_id = await q.create_user(
                conn, email=email, password_hash=password_hash, first_name=first, last_name=last
            )
            user = (await q.users_by_ids(conn, ids=[user_id]))[user_id]
    except EmailTaken:
        return AuthResult(errors=_fail("UNIQUE", "an account with this email exists", "email"))
    logger.info("account registered: user_id=%s", user_id)
    return AuthResult(user=user)


async def token_create(ctx: Context, email: str, password: str) -> AuthResult:
    """Sign in. Unknown emails cost the same as wrong passwords (a dummy verify), and both
    say the same thing. Attempts are throttled per account and per client IP, counted per
    call (aliases included); over the limit nothing is verified."""
    normalized = normalize_email(email)
    account = normalized if isinstance(normalized, str) else email.strip().lower()[:MAX_EMAIL]
    throttle = ctx.services.login_throttle
    keys = (f"login:account:{account}", f"login:ip:{ctx.client_ip}")
    allowed = [await throttle.hit(key) for key in keys]
    if not all(allowed):
        return AuthResult(
            errors=_fail("RATE_LIMITED", "too many sign-in attempts; try again later")
        )
    passwords = ctx.services.passwords
    creds = None
    if isinstance(normalized, str):
        async with ctx.db.read() as conn:
            creds = await q.credentials(conn, email=normalized)
    stored = creds.password_hash if creds is not None and creds.is_active else None
    if not await passwords.verify(stored, password):
        return AuthResult(errors=_fail("INVALID_CREDENTIALS", INVALID_CREDENTIALS))
    assert creds is not None
    await throttle.forgive(keys[0])
    await throttle.release(keys[1])
    new_hash = None
    if passwords.needs_rehash(creds.password_hash):
        new_hash = await passwords.hash(password)
    async with ctx.db.transaction() as conn:
        if new_hash is not None:
            await q.set_password_hash(conn, user_id=creds.user_id, password_hash=new_hash)
        result = await _sign_in(ctx, conn, creds.user_id)
    logger.info("signed in: user_id=%s", creds.user_id)
    return result


async def token_refresh(ctx: Context, refresh_token: str) -> AuthResult:
    async with ctx.db.transaction() as conn:
        try:
            tokens = await q.rotate_refresh_token(
                conn, token=refresh_token, refresh_ttl=ctx.settings.refresh_token_ttl
            )
        except q.RefreshRejected as exc:
            if exc.reused:
                logger.warning("refresh token reused: its session is revoked")
            tokens = None
    if tokens is None:
        return AuthResult(
            errors=_fail("INVALID_TOKEN", "the refresh token is invalid or expired", "refreshToken")
        )
    access = create_access_token(
        secret=ctx.settings.secret_key,
        user_id=tokens.user_id,
        session_id=tokens.session_id,
        ttl=ctx.settings.access_token_ttl,
    )
    return AuthResult(access_token=access, refresh_token=tokens.refresh_token)


async def token_revoke(ctx: Context, refresh_token: str) -> AuthResult:
    """Sign out: the session's refresh and access tokens stop working at once."""
    async with ctx.db.transaction() as conn:
        session_id = await q.session_of_refresh_token(conn, token=refresh_token)
        if session_id is not None:
            await q.revoke_session(conn, session_id=session_id)
    if session_id is None:
        return AuthResult(
            errors=_fail("INVALID_TOKEN", "the refresh token is invalid", "refreshToken")
        )
    return AuthResult()


# --------------------------------------------------------------------------- passwords


async def password_change(ctx: Context, old_password: str, new_password: str) -> AuthResult:
    """Every session of the user ends (other devices included); the caller gets a new one."""
    viewer = ctx.require_viewer()
    if (bad := _password_problem(new_password, "newPassword")) is not None:
        return AuthResult(errors=[bad])
    throttle = ctx.services.login_throttle
    key = f"login:account:{viewer.email}"
    if not await throttle.hit(key):
        return AuthResult(
            errors=_fail("RATE_LIMITED", "too many attempts; try again later", "oldPassword")
        )
    async with ctx.db.read() as conn:
        stored = await q.password_hash_of(conn, user_id=viewer.id)
    if not await ctx.services.passwords.verify(stored, old_password):
        return AuthResult(errors=_fail("INVALID_CREDENTIALS", "wrong password", "oldPassword"))
    await throttle.forgive(key)
    new_hash = await ctx.services.passwords.hash(new_password)
    async with ctx.db.transaction() as conn:
        await q.set_password_hash(conn, user_id=viewer.id, password_hash=new_hash)
        await q.revoke_user_sessions(conn, user_id=viewer.id)
        result = await _sign_in(ctx, conn, viewer.id)
    logger.info("password changed: user_id=%s", viewer.id)
    return result


async def request_password_reset(ctx: Context, email: str) -> AuthResult:
    """The same answer whether or not the account exists; the token goes out by mail."""
    normalized = normalize_email(email)
    if isinstance(normalized, Problem):
        return AuthResult(errors=[normalized])
    if not await ctx.services.login_throttle.hit(f"reset:{normalized}"):
        return AuthResult(errors=_fail("RATE_LIMITED", "too many requests; try again later"))
    queued: list[int] = []
    async with ctx.db.transaction() as conn:
        creds = await q.credentials(conn, email=normalized)
        if creds is not None and creds.is_active:
            token = await q.create_reset_token(
                conn, user_id=creds.user_id, ttl=ctx.settings.password_reset_ttl
            )
            queued.append(
                await ctx.services.mailer.queue(
                    conn,
                    to=normalized,
                    subject="Reset your password",
                    body=_reset_body(ctx, token),
                    kind="password_reset",
                )
            )
    # Sent after the answer, so the time taken says nothing about the account existing.
    ctx.services.mailer.deliver_later(queued)
    return AuthResult()


def _reset_body(ctx: Context, token: str) -> str:
    minutes = ctx.settings.password_reset_ttl // 60
    link = ctx.settings.password_reset_url
    where = f"{link}?token={token}" if link else f"this token: {token}"
    return (
        "Someone asked to reset the password of your account.\n\n"
        f"To choose a new password, use {where}\n\n"
        f"It works once, within {minutes} minutes. If it was not you, ignore this message.\n"
    )


async def password_reset(ctx: Context, token: str, new_password: str) -> AuthResult:
    if (bad := _password_problem(new_password, "newPassword")) is not None:
        return AuthResult(errors=[bad])
    invalid = _fail("INVALID_TOKEN", "the reset token is invalid or expired", "token")
    async with ctx.db.read() as conn:
        if not await q.reset_token_is_live(conn, token=token):
            return AuthResult(errors=invalid)  # no hashing work for made-up tokens
    new_hash = await ctx.services.passwords.hash(new_password)
    async with ctx.db.transaction() as conn:
        user_id = await q.consume_reset_token(conn, token=token)
        if user_id is not None:
            await q.set_password_hash(conn, user_id=user_id, password_hash=new_hash)
            await q.revoke_user_sessions(conn, user_id=user_id)
    if user_id is None:
        return AuthResult(errors=invalid)
    logger.info("password reset: user_id=%s", user_id)
    return AuthResult()


# --------------------------------------------------------------------------- addresses


class AddressInput(Protocol):
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str: ...
    @property
    def company_name(self) -> str | None: ...
    @property
    def street_address_1(self) -> str: ...
    @property
    def street_address_2(self) -> str | None: ...
    @property
    def city(self) -> str: ...
    @property
    def postal_code(self) -> str: ...
    @property
    def country_code(self) -> str: ...
    @property
    def country_area(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...


_LIMITS = {
    "first_name": 100, "last_name": 100, "company_name": 100, "street_address_1": 200,
    "street_address_2": 200, "city": 100, "postal_code": 20, "country_code": 2,
    "country_area": 100, "phone": 32,
}  # fmt: skip
_REQUIRED = {"first_name", "last_name", "street_address_1", "city", "postal_code", "country_code"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def clean_address(data: AddressInput, *, prefix: str = "input") -> dict[str, str] | list[Problem]:
    """Validated, trimmed address values, or the problems (field paths in camelCase)."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for name in ADDRESS_FIELDS:
        path = f"{prefix}.{_camel(name)}"
        text = (getattr(data, name) or "").strip()
        if name in _REQUIRED and not text:
            problems.append(Problem("REQUIRED", "this field is required", path))
        elif len(text) > _LIMITS[name]:
            problems.append(Problem("INVALID", f"at most {_LIMITS[name]} characters", path))
        elif _CONTROL.search(text):
            problems.append(Problem("INVALID", "contains control characters", path))
        values[name] = text
    code = values["country_code"].upper()
    values["country_code"] = code
    if code and not any(p.field == f"{prefix}.countryCode" for p in problems):
        if code not in COUNTRY_CODES:
            problems.append(
                Problem(
                    "INVALID", "not an ISO 3166-1 alpha-2 country code", f"{prefix}.countryCode"
                )
            )
    phone = values["phone"]
    if (
        phone
        and not _PHONE.match(phone)
        and not any(p.field == f"{prefix}.phone" for p in problems)
    ):
        problems.append(Problem("INVALID", "not a phone number", f"{prefix}.phone"))
    postal = values["postal_code"]
    if (
        postal
        and not _POSTAL.match(postal)
        and not any(p.field == f"{prefix}.postalCode" for p in problems)
    ):
        problems.append(Problem("INVALID", "not a postal code", f"{prefix}.postalCode"))
    return problems or values


def _address_id(gid: str) -> int | Problem:
    try:
        return ids.decode(gid, "Address")
    except InvalidInput as exc:
        return Problem("INVALID", exc.message, "id")


async def _user_and_address(
    ctx: Context, conn: Any, user_id: int, address_id: int | None
) -> AddressResult:
    user = (await q.users_by_ids(conn, ids=[user_id]))[user_id]
    address = None
    if address_id is not None:
        address = (await q.owned_addresses(conn, ids=[address_id], owner_id=user_id)).get(
            address_id
        )
    return AddressResult(address=address, user=user)


async def address_create(
    ctx: Context, data: AddressInput, set_default_shipping: bool | None
) -> AddressResult:
    viewer = ctx.require_viewer()
    values = clean_address(data)
    if isinstance(values, list):
        return AddressResult(errors=values)
    async with ctx.db.transaction() as conn:
        await q.lock_user(conn, user_id=viewer.id)
        existing = await q.count_addresses(conn, user_id=viewer.id)
        if existing >= MAX_ADDRESSES:
            return AddressResult(
                errors=_fail("LIMIT_EXCEEDED", f"at most {MAX_ADDRESSES} addresses per account")
            )
        address_id = await q.create_address(conn, user_id=viewer.id, values=values)
        if set_default_shipping or existing == 0:
            await q.set_default_shipping(conn, user_id=viewer.id, address_id=address_id)
        return await _user_and_address(ctx, conn, viewer.id, address_id)


async def address_update(
    ctx: Context, gid: str, data: AddressInput, set_default_shipping: bool | None = None
) -> AddressResult:
    viewer = ctx.require_viewer()
    address_id = _address_id(gid)
    if isinstance(address_id, Problem):
        return AddressResult(errors=[address_id])
    values = clean_address(data)
    if isinstance(values, list):
        return AddressResult(errors=values)
    async with ctx.db.transaction() as conn:
        await q.lock_user(conn, user_id=viewer.id)
        if not await q.update_address(
            conn, address_id=address_id, owner_id=viewer.id, values=values
        ):
            return AddressResult(errors=_fail("NOT_FOUND", "no such address", "id"))
        if set_default_shipping:
            await q.set_default_shipping(conn, user_id=viewer.id, address_id=address_id)
        return await _user_and_address(ctx, conn, viewer.id, address_id)


async def address_delete(ctx: Context, gid: str) -> AddressResult:
    viewer = ctx.require_viewer()
    address_id = _address_id(gid)
    if isinstance(address_id, Problem):
        return AddressResult(errors=[address_id])
    async with ctx.db.transaction() as conn:
        before = (await q.owned_addresses(conn, ids=[address_id], owner_id=viewer.id)).get(
            address_id
        )
        if before is None or not await q.delete_address(
            conn, address_id=address_id, owner_id=viewer.id
        ):
            return AddressResult(errors=_fail("NOT_FOUND", "no such address", "id"))
        result = await _user_and_address(ctx, conn, viewer.id, None)
    result.address = before
    return result


# --------------------------------------------------------------------------- reads


def me(ctx: Context) -> UserRecord | None:
    if ctx.auth_error is not None:
        ctx.require_viewer()  # a bad token is an error, not an anonymous answer
    return ctx.viewer


def default_shipping(addresses: list[AddressRecord]) -> AddressRecord | None:
    return next((a for a in addresses if a.is_default_shipping), None)


async def authenticate(ctx: Context, authorization: str | None) -> None:
    """Resolve `Authorization: Bearer <token>` into the viewer (one SQL statement).

    A bad, expired or revoked token leaves the request anonymous with `auth_error` set:
    public fields still answer, fields that need a sign-in answer UNAUTHENTICATED.
    """
    lookup = start_authentication(ctx, authorization)
    if lookup is not None:
        await lookup


def start_authentication(
    ctx: Context, authorization: str | None
) -> Coroutine[Any, Any, None] | None:
    """`authenticate` in two steps: the header and the token's signature are checked
    here (setting `auth_error` when they fail); what is left to await is the session
    lookup that makes the token's user the viewer, or None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        ctx.auth_error = "malformed authorization header"
        return None
    try:
        claims = verify_access_token(token, secret=ctx.settings.secret_key)
    except InvalidToken:
        ctx.auth_error = "invalid or expired token"
        return None
    ctx.token_user_id = claims.user_id
    return _viewer_of_session(ctx, claims.user_id, claims.session_id)


async def _viewer_of_session(ctx: Context, user_id: int, session_id: str) -> None:
    async with ctx.db.read() as conn:
        viewer = await q.viewer_for_session(conn, user_id=user_id, session_id=session_id)
    if viewer is None:
        ctx.auth_error = "revoked token"
        return
    ctx.viewer, ctx.session_id = viewer, session_id
