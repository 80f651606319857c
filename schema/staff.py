"""Staff accounts (MANAGE_STAFF) and the audit log of staff mutations."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from models.audit.queries import AuditRecord
from models.pagination import PageArgs
from resolvers import ids
from resolvers import staff as r
from resolvers.context import Context
from schema.accounts import Permission, User
from schema.admin import StaffError, staff_mutation
from schema.fields import computed, global_id, loaded, records_of
from schema.relay import Connection, Node

Ctx = Info[Context, None]


def _object_id(root: strawberry.Parent[AuditRecord]) -> strawberry.ID:
    return strawberry.ID(ids.encode(root.object_type, root.object_key))


@strawberry.type(description="One change a staff member made, written with the change.")
class AuditEntry(Node):
    id: strawberry.ID = global_id("AuditEntry")
    actor: User | None = loaded(
        lambda c: c.accounts.user_by_id,
        "actor_id",
        User | None,
        description="null once the staff account is deleted",
    )
    actor_email: str = strawberry.field(description="The actor's email at the time.")
    action: str = strawberry.field(description='The mutation, e.g. "productUpdate".')
    object_type: str
    object_id: strawberry.ID = computed(_object_id, strawberry.ID)
    changed_fields: list[str] = computed(
        lambda root: list(root.changed_fields),
        list[str],
        description="Input fields that changed (names only, never values).",
    )
    created_at: datetime

    is_type_of = records_of(AuditRecord)


@strawberry.input
class StaffCreateInput:
    email: str
    password: str
    first_name: str | None = None
    last_name: str | None = None
    permissions: list[Permission]


@strawberry.input
class StaffUpdateInput:
    first_name: str | None = None
    last_name: str | None = None
    permissions: list[Permission] | None = strawberry.field(
        default=None, description="Replaces the staff member's permissions."
    )
    is_active: bool | None = strawberry.field(
        default=None, description="false signs them out everywhere and blocks sign-in."
    )


@strawberry.input
class StaffFilter:
    search: str | None = strawberry.field(default=None, description="Email or name fragment.")
    permissions: list[Permission] | None = strawberry.field(
        default=None, description="Holding any of these."
    )


@strawberry.input
class AuditLogFilter:
    actor_id: strawberry.ID | None = None
    action: str | None = strawberry.field(default=None, description='e.g. "productUpdate"')
    object_id: strawberry.ID | None = None
    created_gte: datetime | None = None
    created_lte: datetime | None = None


@strawberry.type
class StaffCreatePayload:
    user: User | None
    errors: list[StaffError]


@strawberry.type
class StaffUpdatePayload:
    user: User | None
    errors: list[StaffError]


@strawberry.type
class StaffDeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class StaffQuery:
    @strawberry.field(description="Staff accounts by email. Needs MANAGE_STAFF.")
    async def staff_users(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: StaffFilter | None = None,
    ) -> Connection[User]:
        args = PageArgs(first=first, after=after, last=last, before=before)
        return await r.staff_users(info.context, args=args, staff_filter=filter)  # type: ignore[return-value]

    @strawberry.field(description="Staff changes, newest first. Needs MANAGE_STAFF.")
    async def audit_log(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: AuditLogFilter | None = None,
    ) -> Connection[AuditEntry]:
        args = PageArgs(first=first, after=after, last=last, before=before)
        return await r.audit_log(info.context, args=args, audit_filter=filter)  # type: ignore[return-value]


@strawberry.type
class StaffMutation:
    @staff_mutation("MANAGE_STAFF", "A staff account with the given permissions.")
    async def staff_create(self, info: Ctx, input: StaffCreateInput) -> StaffCreatePayload:
        result = await r.staff_create(info.context, input)
        return StaffCreatePayload(user=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation(
        "MANAGE_STAFF",
        "Grant or revoke permissions, rename, deactivate. You cannot remove your own "
        "MANAGE_STAFF, and the last MANAGE_STAFF holder keeps it.",
    )
    async def staff_update(
        self, info: Ctx, id: strawberry.ID, input: StaffUpdateInput
    ) -> StaffUpdatePayload:
        result = await r.staff_update(info.context, id, input)
        return StaffUpdatePayload(user=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation(
        "MANAGE_STAFF",
        "Delete a staff account (not yourself, not the last MANAGE_STAFF holder). "
        "Their orders and audit entries remain.",
    )
    async def staff_delete(self, info: Ctx, id: strawberry.ID) -> StaffDeletePayload:
        result = await r.staff_delete(info.context, id)
        return StaffDeletePayload(
            deleted_id=strawberry.ID(result.value) if result.value else None,
            errors=result.errors,  # type: ignore[arg-type]
        )
