"""Staff administration: staff accounts (MANAGE_STAFF) and the audit log.

Rules the shop relies on: nobody removes their own MANAGE_STAFF or deletes themselves,
and the last active MANAGE_STAFF holder can be neither demoted, deactivated nor deleted
(checked under the staff lock, so concurrent removals cannot race past it). Permission
changes, deactivation and removal take effect on the next request: the viewer is loaded
per request, and deactivation revokes every session.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from models.accounts import queries as aq
from models.accounts import staff as q
from models.accounts.passwords import PasswordPolicyError, check_policy
from models.accounts.queries import EmailTaken, UserRecord
from models.accounts.tables import PERMISSIONS
from models.audit.queries import AuditFilter, AuditRecord, audit_window, list_audit, record_audit
from models.errors import InvalidInput, Problem
from models.pagination import Page, PageArgs
from resolvers import ids
from resolvers.accounts import NAME_LIMIT, normalize_email
from resolvers.admin import Result, clean_text, decode_id, fail
from resolvers.context import Context

logger = logging.getLogger("shopql.staff")

PERMISSION = "MANAGE_STAFF"
MAX_SEARCH = 254
MAX_ACTION = 64


class StaffCreateInput(Protocol):
    @property
    def email(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def first_name(self) -> str | None: ...
    @property
    def last_name(self) -> str | None: ...
    @property
    def permissions(self) -> Sequence[Any]: ...


class StaffUpdateInput(Protocol):
    @property
    def first_name(self) -> str | None: ...
    @property
    def last_name(self) -> str | None: ...
    @property
    def permissions(self) -> Sequence[Any] | None: ...
    @property
    def is_active(self) -> bool | None: ...


def _permission_values(values: Sequence[Any], problems: list[Problem]) -> frozenset[str]:
    names = frozenset(getattr(p, "value", p) for p in values)
    if names - set(PERMISSIONS):  # enum input makes this unreachable over GraphQL
        problems.append(Problem("INVALID", "unknown permission", "input.permissions"))
    return names


async def staff_create(ctx: Context, data: StaffCreateInput) -> Result[UserRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    email = normalize_email(data.email, field="input.email")
    if isinstance(email, Problem):
        problems.append(email)
    try:
        check_policy(data.password)
    except PasswordPolicyError as exc:
        problems.append(Problem("INVALID", exc.message, "input.password"))
    first = clean_text(data.first_name, "input.firstName", problems, limit=NAME_LIMIT)
    last = clean_text(data.last_name, "input.lastName", problems, limit=NAME_LIMIT)
    permissions = _permission_values(data.permissions, problems)
    if problems:
        return Result(None, problems)
    assert isinstance(email, str)
    password_hash = await ctx.services.passwords.hash(data.password)
    try:
        async with ctx.db.transaction() as conn:
            user_id = await aq.create_user(
                conn,
                email=email,
                password_hash=password_hash,
                first_name=first or "",
                last_name=last or "",
                is_staff=True,
                permissions=permissions,
            )
            changed = ["email", "password", "permissions"]
            changed += [name for name, v in (("firstName", first), ("lastName", last)) if v]
            await record_audit(
                conn,
                actor=viewer,
                action="staffCreate",
                object_type="User",
                object_key=user_id,
                changed=changed,
            )
            user = (await aq.users_by_ids(conn, ids=[user_id]))[user_id]
    except EmailTaken:
        return fail("UNIQUE", "an account with this email exists", "input.email")
    logger.info("staff created: user_id=%s by user_id=%s", user_id, viewer.id)
    return Result(user)


async def staff_update(ctx: Context, gid: str, data: StaffUpdateInput) -> Result[UserRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    user_id = decode_id(gid, "User", "id", problems)
    first = clean_text(data.first_name, "input.firstName", problems, limit=NAME_LIMIT)
    last = clean_text(data.last_name, "input.lastName", problems, limit=NAME_LIMIT)
    permissions = (
        _permission_values(data.permissions, problems) if data.permissions is not None else None
    )
    if problems:
        return Result(None, problems)
    assert user_id is not None
    values: dict[str, Any] = {}
    if first is not None:
        values["first_name"] = first
    if last is not None:
        values["last_name"] = last
    if data.is_active is not None:
        values["is_active"] = data.is_active
    async with ctx.db.transaction() as conn:
        await q.lock_staff(conn)
        user = await q.staff_user(conn, user_id=user_id)
        if user is None:
            return fail("NOT_FOUND", "no staff member has this ID", "id")
        loses_admin = user.is_active and q.STAFF_ADMIN in user.permissions
        loses_admin = loses_admin and (
            data.is_active is False
            or (permissions is not None and q.STAFF_ADMIN not in permissions)
        )
        if loses_admin:
            if user.id == viewer.id:
                field = "input.isActive" if data.is_active is False else "input.permissions"
                return fail("PROTECTED", "you cannot remove your own MANAGE_STAFF access", field)
            if await q.other_admins(conn, user_id=user.id) == 0:
                return fail("PROTECTED", "the last MANAGE_STAFF holder cannot lose it", "id")
        changed = [
            name
            for name, column in (
                ("firstName", "first_name"),
                ("lastName", "last_name"),
                ("isActive", "is_active"),
            )
            if column in values and values[column] != getattr(user, column)
        ]
        if permissions is not None and permissions != user.permissions:
            changed.append("permissions")
        await q.update_staff(conn, user_id=user.id, values=values, permissions=permissions)
        if data.is_active is False and user.is_active:
            await aq.revoke_user_sessions(conn, user_id=user.id)
        if changed:
            await record_audit(
                conn,
                actor=viewer,
                action="staffUpdate",
                object_type="User",
                object_key=user.id,
                changed=changed,
            )
        updated = (await aq.users_by_ids(conn, ids=[user.id]))[user.id]
    return Result(updated)


async def staff_delete(ctx: Context, gid: str) -> Result[str]:
    """Remove a staff account; the payload carries its (now dangling) ID."""
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    user_id = decode_id(gid, "User", "id", problems)
    if problems:
        return Result(None, problems)
    assert user_id is not None
    if user_id == viewer.id:
        return fail("PROTECTED", "you cannot delete your own account here", "id")
    async with ctx.db.transaction() as conn:
        await q.lock_staff(conn)
        user = await q.staff_user(conn, user_id=user_id)
        if user is None:
            return fail("NOT_FOUND", "no staff member has this ID", "id")
        if (
            user.is_active
            and q.STAFF_ADMIN in user.permissions
            and await q.other_admins(conn, user_id=user.id) == 0
        ):
            return fail("PROTECTED", "the last MANAGE_STAFF holder cannot be deleted", "id")
        await q.delete_user(conn, user_id=user.id)
        await record_audit(
            conn, actor=viewer, action="staffDelete", object_type="User", object_key=user.id
        )
    logger.info("staff deleted: user_id=%s by user_id=%s", user_id, viewer.id)
    return Result(gid)


# --------------------------------------------------------------------------- reads


class StaffFilterInput(Protocol):
    @property
    def search(self) -> str | None: ...
    @property
    def permissions(self) -> Sequence[Any] | None: ...


async def staff_users(
    ctx: Context,
    *,
    args: PageArgs,
    staff_filter: StaffFilterInput | None,
) -> Page[UserRecord]:
    ctx.require_permission(PERMISSION)
    search = (staff_filter.search or "").strip() if staff_filter else ""
    if len(search) > MAX_SEARCH:
        raise InvalidInput("`filter.search` is too long", field="filter.search")
    perms = (
        tuple(p.value for p in staff_filter.permissions)
        if staff_filter is not None and staff_filter.permissions
        else None
    )
    page = await q.list_staff(
        ctx.db,
        window=q.staff_window(args),
        staff_filter=q.StaffFilter(search=search or None, permissions=perms),
    )
    found = await ctx.accounts.user_by_id.load_many(page.nodes)
    for edge, user in zip(page.edges, found, strict=True):
        edge.node = user  # type: ignore[assignment]
    page.edges = [e for e in page.edges if e.node is not None]
    return page  # type: ignore[return-value]


class AuditFilterInput(Protocol):
    @property
    def actor_id(self) -> str | None: ...
    @property
    def action(self) -> str | None: ...
    @property
    def object_id(self) -> str | None: ...
    @property
    def created_gte(self) -> datetime | None: ...
    @property
    def created_lte(self) -> datetime | None: ...


def _audit_filter(value: AuditFilterInput | None) -> AuditFilter:
    if value is None:
        return AuditFilter()
    object_type = object_key = None
    if value.object_id is not None:
        found_type, key = ids.decode_any(value.object_id, field="filter.objectId")
        object_type, object_key = found_type, str(key)
    action = value.action.strip() if value.action is not None else None
    if action is not None and (not action or len(action) > MAX_ACTION or not action.isalnum()):
        raise InvalidInput("`filter.action` is a mutation name", field="filter.action")
    for name in ("created_gte", "created_lte"):
        moment = getattr(value, name)
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput("dates need a UTC offset", field=f"filter.{name}")
    return AuditFilter(
        actor_id=(
            ids.decode(value.actor_id, "User", field="filter.actorId")
            if value.actor_id is not None
            else None
        ),
        action=action,
        object_type=object_type,
        object_key=object_key,
        created_gte=value.created_gte,
        created_lte=value.created_lte,
    )


async def audit_log(
    ctx: Context, *, args: PageArgs, audit_filter: AuditFilterInput | None
) -> Page[AuditRecord]:
    """Newest first. Needs MANAGE_STAFF."""
    ctx.require_permission(PERMISSION)
    return await list_audit(
        ctx.db, window=audit_window(args), audit_filter=_audit_filter(audit_filter)
    )
