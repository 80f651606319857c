"""Plain-function factories and HTTP helpers shared by the accounts, authz and mail tests."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import httpx
import sqlalchemy as sa

from models.accounts import queries as q
from models.accounts.passwords import Passwords
from models.accounts.tables import addresses, auth_sessions, users
from models.db import Database
from resolvers.context import Services

PASSWORD = "correct horse battery"
AUTH_FIELDS = "accessToken refreshToken errors { field code message }"
ERRORS = "errors { field code message }"
TOKEN_CREATE = f"""
mutation($email: String!, $password: String!) {{
  tokenCreate(email: $email, password: $password) {{ {AUTH_FIELDS} user {{ id email }} }}
}}"""
TOKEN_REFRESH = f"""
mutation($t: String!) {{ tokenRefresh(refreshToken: $t) {{ {AUTH_FIELDS} }} }}"""
TOKEN_REVOKE = f"mutation($t: String!) {{ tokenRevoke(refreshToken: $t) {{ {ERRORS} }} }}"
REGISTER = f"""
mutation($input: AccountRegisterInput!) {{
  accountRegister(input: $input) {{ user {{ id email firstName lastName isStaff }} {ERRORS} }}
}}"""
ME = "{ me { id email } }"
ADDRESS_FIELDS = """
  id firstName lastName companyName streetAddress1 streetAddress2 city postalCode
  countryCode countryArea phone
"""
ADDRESS = {
    "firstName": "Ann",
    "lastName": "Lee",
    "streetAddress1": "1 Main Street",
    "city": "Springfield",
    "postalCode": "12345",
    "countryCode": "US",
}
# The same address as the data layer stores it (snake_case columns).
ADDRESS_ROW = {
    "first_name": "Ann",
    "last_name": "Lee",
    "street_address_1": "1 Main Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country_code": "US",
}

_hashes: dict[str, str] = {}


def gid(type_name: str, key: int | str) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


async def password_hash(password: str = PASSWORD) -> str:
    """An argon2id hash with the default parameters, computed once per password."""
    if password not in _hashes:
        _hashes[password] = await Passwords().hash(password)
    return _hashes[password]


async def add_user(
    db: Database,
    email: str,
    *,
    password: str = PASSWORD,
    is_staff: bool = False,
    permissions: Iterable[str] = (),
) -> int:
    """A user straight in the database (no registration round trip)."""
    hashed = await password_hash(password)
    async with db.transaction() as conn:
        return await q.create_user(
            conn,
            email=email,
            password_hash=hashed,
            is_staff=is_staff,
            permissions=permissions,
        )


async def add_address(db: Database, user_id: int, **values: str) -> int:
    async with db.transaction() as conn:
        return await q.create_address(conn, user_id=user_id, values={**ADDRESS_ROW, **values})


async def address_row(db: Database, address_id: int) -> dict[str, Any] | None:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(addresses).where(addresses.c.id == address_id))).first()
    return dict(row._mapping) if row else None


async def stored_hash(db: Database, email: str) -> str:
    async with db.read() as conn:
        return str(
            (
                await conn.execute(sa.select(users.c.password_hash).where(users.c.email == email))
            ).scalar_one()
        )


async def count_rows(db: Database, table: sa.Table, *where: Any) -> int:
    async with db.read() as conn:
        stmt = sa.select(sa.func.count()).select_from(table)
        return int((await conn.execute(stmt.where(*where))).scalar_one())


async def count_sessions(db: Database, user_id: int) -> int:
    return await count_rows(db, auth_sessions, auth_sessions.c.user_id == user_id)


async def call(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    authorization: str | None = None,
) -> dict[str, Any]:
    """POST a GraphQL request (optionally signed in); the body, after checking HTTP 200."""
    headers = {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["authorization"] = authorization
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_codes(body: dict[str, Any]) -> list[str]:
    """The top-level error codes of a response."""
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def payload_errors(body: dict[str, Any], field: str) -> list[tuple[str | None, str]]:
    """(field, code) of every payload error of mutation `field`."""
    assert "errors" not in body, body["errors"]
    return [(e["field"], e["code"]) for e in body["data"][field]["errors"]]


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    """tokenCreate that must succeed; its payload."""
    body = await call(client, TOKEN_CREATE, {"email": email, "password": password})
    assert "errors" not in body, body["errors"]
    payload: dict[str, Any] = body["data"]["tokenCreate"]
    assert payload["errors"] == [], payload["errors"]
    assert payload["accessToken"] and payload["refreshToken"]
    return payload


async def me(client: httpx.AsyncClient, token: str | None) -> str | None:
    """The signed-in email, None when anonymous, "UNAUTHENTICATED" when the token is refused."""
    body = await call(client, ME, token=token)
    if "errors" in body:
        assert error_codes(body) == ["UNAUTHENTICATED"], body
        assert body["data"] == {"me": None}
        return "UNAUTHENTICATED"
    user = body["data"]["me"]
    return None if user is None else str(user["email"])


def services_of(client: httpx.AsyncClient) -> Services:
    """The per-process services behind a test client (create_app keeps them on the GraphQL
    route's endpoint only; they are not on app.state)."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    for route in transport.app.routes:  # type: ignore[attr-defined]
        services = getattr(getattr(route, "endpoint", None), "services", None)
        if isinstance(services, Services):
            return services
    raise AssertionError("no GraphQL route with services")


def client_from(client: httpx.AsyncClient, ip: str) -> httpx.AsyncClient:
    """Another client of the same app instance (same throttles), seen from address `ip`."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, client=(ip, 40000)),
        base_url="http://shop.test",
    )


class Calls:
    """Counts the calls of one async method of an object (e.g. Passwords.verify)."""

    def __init__(self, obj: object, name: str) -> None:
        self.count = 0
        original = getattr(obj, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        setattr(obj, name, counted)


async def mint_token(db: Database, user_id: int, *, ttl: int = 900) -> str:
    """An access token for `user_id` on a new session, without a sign-in round trip
    (no password hashing: fast fixtures for permission tests)."""
    from conftest import TEST_SECRET

    from models.accounts.tokens import create_access_token

    async with db.transaction() as conn:
        tokens = await q.start_session(conn, user_id=user_id, refresh_ttl=3600)
    return create_access_token(
        secret=TEST_SECRET, user_id=user_id, session_id=tokens.session_id, ttl=ttl
    )
