"""Staff accounts: listing, permission changes and removal, with the rule that the shop
never loses its last MANAGE_STAFF holder.

Changes that could remove a MANAGE_STAFF holder run under one shop-wide lock (SQLite
serialises writers already; PostgreSQL takes a transaction-scoped advisory lock), so two
admins removing each other at the same moment cannot leave nobody in charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.accounts import queries as q
from models.accounts.queries import UserRecord
from models.accounts.tables import user_permissions, users
from models.db import Database, utcnow
from models.pagination import Page, PageArgs, SortKey, Window

STAFF_ADMIN = "MANAGE_STAFF"
_LOCK = "shopql:staff-admins"


async def lock_staff(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(_LOCK, 0)))
        )


async def staff_user(conn: AsyncConnection, *, user_id: int) -> UserRecord | None:
    """A staff account by ID (customers read as missing)."""
    found = await q.users_by_ids(conn, ids=[user_id])
    user = found.get(user_id)
    return user if user is not None and user.is_staff else None


async def other_admins(conn: AsyncConnection, *, user_id: int) -> int:
    """Active staff other than `user_id` who hold MANAGE_STAFF."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(users.join(user_permissions, user_permissions.c.user_id == users.c.id))
        .where(
            user_permissions.c.permission == STAFF_ADMIN,
            users.c.is_staff.is_(True),
            users.c.is_active.is_(True),
            users.c.id != user_id,
        )
    )
    return int((await conn.execute(stmt)).scalar_one())


async def update_staff(
    conn: AsyncConnection,
    *,
    user_id: int,
    values: dict[str, Any],
    permissions: frozenset[str] | None,
) -> None:
    if values:
        await conn.execute(
            users.update().where(users.c.id == user_id).values(**values, updated_at=utcnow())
        )
    if permissions is not None:
        await q.set_permissions(conn, user_id=user_id, permissions=permissions)


async def delete_user(conn: AsyncConnection, *, user_id: int) -> bool:
    """Remove the account. Its sessions, tokens, permissions and addresses go with it;
    orders keep their email and snapshots (user_id becomes NULL)."""
    result = await conn.execute(sa.delete(users).where(users.c.id == user_id))
    return result.rowcount == 1


@dataclass(frozen=True, slots=True)
class StaffFilter:
    search: str | None = None
    permissions: tuple[str, ...] | None = None


def staff_window(args: PageArgs) -> Window:
    return Window.of(SortKey("staff-email", users.c.email, users.c.id, False, "str"), args)


def _like(fragment: str) -> str:
    escaped = fragment.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_staff(db: Database, *, window: Window, staff_filter: StaffFilter) -> Page[int]:
    """A page of staff user IDs, ordered by email; the caller loads the users."""
    base = sa.select(users.c.id).where(users.c.is_staff.is_(True))
    if staff_filter.search:
        pattern = _like(staff_filter.search)
        name = sa.func.lower(users.c.first_name + " " + users.c.last_name)
        base = base.where(
            sa.or_(users.c.email.like(pattern, escape="\\"), name.like(pattern, escape="\\"))
        )
    if staff_filter.permissions:
        holders = sa.select(user_permissions.c.user_id).where(
            user_permissions.c.permission.in_(staff_filter.permissions)
        )
        base = base.where(users.c.id.in_(holders))
    async with db.read() as conn:
        rows = (await conn.execute(window.apply(base))).all()

    async def count() -> int:
        async with db.read() as conn:
            total = await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
            return int(total.scalar_one())

    return window.page(rows, lambda row: int(row.id), count)
