"""Accounts data layer: users, permissions, sessions and refresh tokens, reset tokens,
addresses. Keyword-only functions on the caller's connection; they never commit.

Every query that touches an object a customer owns filters by the owner in SQL
(`WHERE id = :id AND user_id = :viewer`), so no code path can read or change another's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.accounts.tables import (
    PERMISSIONS,
    addresses,
    auth_sessions,
    password_reset_tokens,
    refresh_tokens,
    user_permissions,
    users,
)
from models.accounts.tokens import new_opaque_token, new_session_id, token_hash
from models.db import utcnow
from models.grouping import group_records
from models.reads import fetch_all, keys_in


@dataclass(slots=True)
class UserRecord:
    id: int
    email: str
    first_name: str
    last_name: str
    is_staff: bool
    is_active: bool
    date_joined: datetime
    permissions: frozenset[str] = frozenset()

    def has(self, permission: str) -> bool:
        return self.is_active and self.is_staff and permission in self.permissions


@dataclass(slots=True)
class AddressRecord:
    id: int
    user_id: int | None
    first_name: str
    last_name: str
    company_name: str
    street_address_1: str
    street_address_2: str
    city: str
    postal_code: str
    country_code: str
    country_area: str
    phone: str
    is_default_shipping: bool


ADDRESS_FIELDS = tuple(
    f.name for f in fields(AddressRecord) if f.name not in ("id", "user_id", "is_default_shipping")
)
_USER_COLUMNS = [users.c[f.name] for f in fields(UserRecord) if f.name != "permissions"]
_ADDRESS_COLUMNS = [addresses.c[f.name] for f in fields(AddressRecord)]


class EmailTaken(Exception):
    pass


# --------------------------------------------------------------------------- users


def _with_permissions(stmt: sa.Select[Any]) -> sa.Select[Any]:
    """Users with their permissions, in one statement (a LEFT JOIN row per permission)."""
    return (
        stmt.add_columns(user_permissions.c.permission)
        .outerjoin(user_permissions, user_permissions.c.user_id == users.c.id)
        .order_by(users.c.id)
    )


# Built once, values bound at execution: these run on every request (authentication,
# user loaders).
_USERS_BY_IDS = _with_permissions(sa.select(*_USER_COLUMNS).where(keys_in(users.c.id)))
_VIEWER = _with_permissions(
    sa.select(*_USER_COLUMNS)
    .join(auth_sessions, auth_sessions.c.user_id == users.c.id)
    .where(
        users.c.id == sa.bindparam("user_id"),
        users.c.is_active.is_(True),
        auth_sessions.c.id == sa.bindparam("session_id"),
        auth_sessions.c.revoked_at.is_(None),
    )
)


async def _users(
    conn: AsyncConnection, stmt: sa.Select[Any], params: Mapping[str, Any]
) -> list[UserRecord]:
    """The UserRecords of a `_with_permissions` statement's rows."""
    rows = await fetch_all(conn, stmt, params)
    found: dict[int, tuple[Any, set[str]]] = {}
    for row in rows:
        entry = found.setdefault(row.id, (row, set()))
        if row.permission is not None:
            entry[1].add(row.permission)
    names = [c.name for c in _USER_COLUMNS]
    return [
        UserRecord(**{n: getattr(row, n) for n in names}, permissions=frozenset(perms))
        for row, perms in found.values()
    ]


async def users_by_ids(conn: AsyncConnection, *, ids: Sequence[int]) -> dict[int, UserRecord]:
    return {u.id: u for u in await _users(conn, _USERS_BY_IDS, {"ids": list(ids)})}


async def viewer_for_session(
    conn: AsyncConnection, *, user_id: int, session_id: str
) -> UserRecord | None:
    """The user behind an access token, if the user is active and the session not revoked."""
    found = await _users(conn, _VIEWER, {"user_id": user_id, "session_id": session_id})
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str
    is_active: bool


async def credentials(conn: AsyncConnection, *, email: str) -> Credentials | None:
    row = (
        await conn.execute(
            sa.select(users.c.id, users.c.password_hash, users.c.is_active).where(
                users.c.email == email
            )
        )
    ).first()
    return Credentials(row.id, row.password_hash, row.is_active) if row else None


async def password_hash_of(conn: AsyncConnection, *, user_id: int) -> str | None:
    return (
        await conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id))
    ).scalar_one_or_none()


async def create_user(
    conn: AsyncConnection,
    *,
    email: str,
    password_hash: str,
    first_name: str = "",
    last_name: str = "",
    is_staff: bool = False,
    permissions: Iterable[str] = (),
) -> int:
    """Insert a user (email already normalised); EmailTaken if the address is in use."""
    exists = await conn.execute(sa.select(users.c.id).where(users.c.email == email))
    if exists.first() is not None:
        raise EmailTaken(email)
    now = utcnow()
    try:
        user_id = (
            await conn.execute(
                users.insert()
                .values(
                    email=email,
                    password_hash=password_hash,
                    first_name=first_name,
                    last_name=last_name,
                    is_staff=is_staff,
                    date_joined=now,
                    updated_at=now,
                )
                .returning(users.c.id)
            )
        ).scalar_one()
    except sa.exc.IntegrityError:  # a concurrent registration won the race
        raise EmailTaken(email) from None
    await set_permissions(conn, user_id=user_id, permissions=permissions)
    return int(user_id)


async def set_permissions(
    conn: AsyncConnection, *, user_id: int, permissions: Iterable[str]
) -> None:
    wanted = sorted(set(permissions))
    unknown = set(wanted) - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"unknown permissions: {sorted(unknown)}")
    await conn.execute(user_permissions.delete().where(user_permissions.c.user_id == user_id))
    if wanted:
        await conn.execute(
            user_permissions.insert(), [{"user_id": user_id, "permission": p} for p in wanted]
        )


async def set_password_hash(conn: AsyncConnection, *, user_id: int, password_hash: str) -> None:
    await conn.execute(
        users.update()
        .where(users.c.id == user_id)
        .values(password_hash=password_hash, updated_at=utcnow())
    )


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class SessionTokens:
    user_id: int
    session_id: str
    refresh_token: str


async def _store_token(conn: AsyncConnection, table: sa.Table, *, ttl: int, **owner: Any) -> str:
    """A new opaque token; only its hash is stored, with its owner and expiry."""
    token = new_opaque_token()
    now = utcnow()
    await conn.execute(
        table.insert().values(
            token_hash=token_hash(token),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            **owner,
        )
    )
    return token


async def _issue_refresh(conn: AsyncConnection, *, session_id: str, ttl: int) -> str:
    return await _store_token(conn, refresh_tokens, ttl=ttl, session_id=session_id)


async def start_session(conn: AsyncConnection, *, user_id: int, refresh_ttl: int) -> SessionTokens:
    session_id = new_session_id()
    await conn.execute(
        auth_sessions.insert().values(id=session_id, user_id=user_id, created_at=utcnow())
    )
    token = await _issue_refresh(conn, session_id=session_id, ttl=refresh_ttl)
    return SessionTokens(user_id, session_id, token)


class RefreshRejected(Exception):
    """Unknown, expired, revoked, or already used (which revokes the whole session)."""

    def __init__(self, *, reused: bool = False) -> None:
        super().__init__("refresh token rejected")
        self.reused = reused


async def rotate_refresh_token(
    conn: AsyncConnection, *, token: str, refresh_ttl: int
) -> SessionTokens:
    """Spend a refresh token and issue its successor in the same session.

    The spend is one conditional UPDATE, so two concurrent refreshes with the same token
    cannot both succeed. Presenting a spent token again revokes its session: whoever holds
    a stolen copy loses it together with the legitimate client.
    """
    if len(token) > 200:
        raise RefreshRejected()
    hashed = token_hash(token)
    now = utcnow()
    spent = (
        await conn.execute(
            refresh_tokens.update()
            .where(
                refresh_tokens.c.token_hash == hashed,
                refresh_tokens.c.used_at.is_(None),
                refresh_tokens.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(refresh_tokens.c.session_id)
        )
    ).first()
    if spent is None:
        known = (
            await conn.execute(
                sa.select(refresh_tokens.c.session_id, refresh_tokens.c.used_at).where(
                    refresh_tokens.c.token_hash == hashed
                )
            )
        ).first()
        if known is not None and known.used_at is not None:
            await revoke_session(conn, session_id=known.session_id)
            raise RefreshRejected(reused=True)
        raise RefreshRejected()
    session = (
        await conn.execute(
            sa.select(auth_sessions.c.user_id)
            .join(users, users.c.id == auth_sessions.c.user_id)
            .where(
                auth_sessions.c.id == spent.session_id,
                auth_sessions.c.revoked_at.is_(None),
                users.c.is_active.is_(True),
            )
        )
    ).first()
    if session is None:
        raise RefreshRejected()
    new_token = await _issue_refresh(conn, session_id=spent.session_id, ttl=refresh_ttl)
    return SessionTokens(session.user_id, spent.session_id, new_token)


async def session_of_refresh_token(conn: AsyncConnection, *, token: str) -> str | None:
    if len(token) > 200:
        return None
    return (
        await conn.execute(
            sa.select(refresh_tokens.c.session_id).where(
                refresh_tokens.c.token_hash == token_hash(token)
            )
        )
    ).scalar_one_or_none()


async def revoke_session(conn: AsyncConnection, *, session_id: str) -> None:
    await conn.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == session_id, auth_sessions.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_user_sessions(conn: AsyncConnection, *, user_id: int) -> None:
    await conn.execute(
        auth_sessions.update()
        .where(auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# --------------------------------------------------------------------------- password reset


async def create_reset_token(conn: AsyncConnection, *, user_id: int, ttl: int) -> str:
    return await _store_token(conn, password_reset_tokens, ttl=ttl, user_id=user_id)


async def reset_token_is_live(conn: AsyncConnection, *, token: str) -> bool:
    if len(token) > 200:
        return False
    row = await conn.execute(
        sa.select(password_reset_tokens.c.user_id).where(
            password_reset_tokens.c.token_hash == token_hash(token),
            password_reset_tokens.c.used_at.is_(None),
            password_reset_tokens.c.expires_at > utcnow(),
        )
    )
    return row.first() is not None


async def lock_user(conn: AsyncConnection, *, user_id: int) -> None:
    """Serialise a user's writes that check-then-act (address count, default address):
    a row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers."""
    await conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())


async def consume_reset_token(conn: AsyncConnection, *, token: str) -> int | None:
    """The user a reset token belongs to, spending it; None if unknown, used or expired."""
    if len(token) > 200:
        return None
    now = utcnow()
    row = (
        await conn.execute(
            password_reset_tokens.update()
            .where(
                password_reset_tokens.c.token_hash == token_hash(token),
                password_reset_tokens.c.used_at.is_(None),
                password_reset_tokens.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(password_reset_tokens.c.user_id)
        )
    ).first()
    if row is None:
        return None
    # Every other outstanding reset token of that user dies with this one.
    await conn.execute(
        password_reset_tokens.update()
        .where(
            password_reset_tokens.c.user_id == row.user_id,
            password_reset_tokens.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return int(row.user_id)


# --------------------------------------------------------------------------- addresses


async def addresses_by_user_ids(
    conn: AsyncConnection, *, user_ids: Sequence[int]
) -> dict[int, list[AddressRecord]]:
    stmt = (
        sa.select(*_ADDRESS_COLUMNS)
        .where(addresses.c.user_id.in_(user_ids))
        .order_by(addresses.c.user_id, addresses.c.id)
    )
    return group_records((await conn.execute(stmt)).all(), "user_id", AddressRecord)


async def owned_addresses(
    conn: AsyncConnection, *, ids: Sequence[int], owner_id: int | None
) -> dict[int, AddressRecord]:
    """Addresses by ID, only those owned by `owner_id` (none for anonymous viewers)."""
    if owner_id is None:
        return {}
    stmt = sa.select(*_ADDRESS_COLUMNS).where(
        addresses.c.id.in_(ids), addresses.c.user_id == owner_id
    )
    return {row.id: AddressRecord(*row) for row in (await conn.execute(stmt)).all()}


async def user_addresses_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int]
) -> dict[int, AddressRecord]:
    """Address-book entries (owned by some user) by ID: for staff with user access.
    Frozen order and checkout copies, owned by nobody, are not among them."""
    stmt = sa.select(*_ADDRESS_COLUMNS).where(
        addresses.c.id.in_(ids), addresses.c.user_id.is_not(None)
    )
    return {row.id: AddressRecord(*row) for row in (await conn.execute(stmt)).all()}


async def count_addresses(conn: AsyncConnection, *, user_id: int) -> int:
    return int(
        (
            await conn.execute(sa.select(sa.func.count()).where(addresses.c.user_id == user_id))
        ).scalar_one()
    )


async def create_address(
    conn: AsyncConnection, *, user_id: int | None, values: Mapping[str, str]
) -> int:
    now = utcnow()
    return int(
        (
            await conn.execute(
                addresses.insert()
                .values(user_id=user_id, created_at=now, updated_at=now, **values)
                .returning(addresses.c.id)
            )
        ).scalar_one()
    )


async def update_address(
    conn: AsyncConnection, *, address_id: int, owner_id: int, values: Mapping[str, str]
) -> bool:
    result = await conn.execute(
        addresses.update()
        .where(addresses.c.id == address_id, addresses.c.user_id == owner_id)
        .values(updated_at=utcnow(), **values)
    )
    return result.rowcount == 1


async def delete_address(conn: AsyncConnection, *, address_id: int, owner_id: int) -> bool:
    result = await conn.execute(
        addresses.delete().where(addresses.c.id == address_id, addresses.c.user_id == owner_id)
    )
    return result.rowcount == 1


async def set_default_shipping(conn: AsyncConnection, *, user_id: int, address_id: int) -> None:
    """Make one of the user's addresses the default (two statements: the partial unique
    index is checked row by row)."""
    await conn.execute(
        addresses.update()
        .where(addresses.c.user_id == user_id, addresses.c.is_default_shipping.is_(True))
        .values(is_default_shipping=False)
    )
    await conn.execute(
        addresses.update()
        .where(addresses.c.id == address_id, addresses.c.user_id == user_id)
        .values(is_default_shipping=True)
    )
