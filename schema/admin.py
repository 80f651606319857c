"""What every staff mutation shares in the schema: the payload error type and the
`staff_mutation` constructor, which states the required permission in the field's
description ("Requires MANAGE_PRODUCTS.") so the schema documents it and the permission
matrix test (tests/test_admin_permissions.py) can read it back."""

from __future__ import annotations

from enum import Enum
from typing import Any

import strawberry

from models.errors import Problem

PERMISSION_NOTE = "Requires {}."


@strawberry.enum
class StaffErrorCode(Enum):
    INVALID = "INVALID"
    REQUIRED = "REQUIRED"
    UNIQUE = "UNIQUE"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = strawberry.enum_value(
        "CONFLICT", description="The object changed since you read it (compare-and-set)."
    )
    INVALID_STATE = strawberry.enum_value(
        "INVALID_STATE", description="Not allowed in the object's current state."
    )
    PAYMENT_ERROR = strawberry.enum_value(
        "PAYMENT_ERROR", description="The payment gateway refused or failed."
    )
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    PROTECTED = strawberry.enum_value(
        "PROTECTED",
        description="Refused to protect the shop: yourself or the last MANAGE_STAFF holder.",
    )


def _code(root: strawberry.Parent[Problem]) -> StaffErrorCode:
    return StaffErrorCode(root.code)


@strawberry.type
class StaffError:
    field: str | None = strawberry.field(
        description="camelCase input path (e.g. `input.variants.0.sku`), or null"
    )
    code: StaffErrorCode = strawberry.field(resolver=_code)
    message: str


def staff_mutation(permission: str, description: str = "", **kw: Any) -> Any:
    """`strawberry.mutation` for a staff mutation that needs `permission`. The resolver must
    still call `ctx.require_permission(permission)` first: the matrix test proves it does."""
    note = PERMISSION_NOTE.format(permission)
    text = f"{description} {note}" if description else note
    return strawberry.mutation(description=text, **kw)
