"""Accounts: users, addresses, tokens, passwords; `me` and the account mutations."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.types import Info

from models.accounts.queries import AddressRecord, UserRecord
from models.accounts.tables import PERMISSIONS
from models.errors import Problem
from resolvers import accounts as r
from resolvers.context import Context
from schema.fields import computed, global_id, records_of
from schema.lookahead import selected_fields
from schema.relay import Connection, Node

if TYPE_CHECKING:
    from schema.orders import Order

Ctx = Info[Context, None]


@strawberry.enum
class Permission(Enum):
    MANAGE_PRODUCTS = "MANAGE_PRODUCTS"
    MANAGE_ORDERS = "MANAGE_ORDERS"
    MANAGE_DISCOUNTS = "MANAGE_DISCOUNTS"
    MANAGE_SHIPPING = "MANAGE_SHIPPING"
    MANAGE_STAFF = "MANAGE_STAFF"


assert {p.value for p in Permission} == set(PERMISSIONS)


@strawberry.enum
class AccountErrorCode(Enum):
    INVALID = "INVALID"
    REQUIRED = "REQUIRED"
    UNIQUE = "UNIQUE"
    NOT_FOUND = "NOT_FOUND"
    PASSWORD_TOO_SHORT = "PASSWORD_TOO_SHORT"
    PASSWORD_TOO_LONG = "PASSWORD_TOO_LONG"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    INVALID_TOKEN = "INVALID_TOKEN"
    RATE_LIMITED = "RATE_LIMITED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"


def _code(root: strawberry.Parent[Problem]) -> AccountErrorCode:
    return AccountErrorCode(root.code)


@strawberry.type
class AccountError:
    field: str | None = strawberry.field(description="camelCase input path, or null")
    code: AccountErrorCode = strawberry.field(resolver=_code)
    message: str


@strawberry.type
class Address(Node):
    id: strawberry.ID = global_id("Address")
    first_name: str
    last_name: str
    company_name: str
    street_address_1: str = strawberry.field(name="streetAddress1")
    street_address_2: str = strawberry.field(name="streetAddress2")
    city: str
    postal_code: str
    country_code: str = strawberry.field(description="ISO 3166-1 alpha-2")
    country_area: str
    phone: str

    is_type_of = records_of(AddressRecord)


def _permissions(root: strawberry.Parent[UserRecord]) -> list[Any]:
    return [Permission(p) for p in sorted(root.permissions)] if root.is_staff else []


def _addresses(root: strawberry.Parent[UserRecord], info: Ctx) -> Awaitable[list[AddressRecord]]:
    return info.context.accounts.addresses_by_user_id.load(root.id)


async def _default_shipping(root: strawberry.Parent[UserRecord], info: Ctx) -> AddressRecord | None:
    return r.default_shipping(await info.context.accounts.addresses_by_user_id.load(root.id))


async def _user_orders(
    root: strawberry.Parent[UserRecord],
    info: Ctx,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Any:
    from resolvers.orders import user_orders

    return await user_orders(
        info.context,
        root.id,
        first=first,
        after=after,
        last=last,
        before=before,
        selected=selected_fields(info, connection=True),
    )


OrderConnection = Connection[Annotated["Order", strawberry.lazy("schema.orders")]]


@strawberry.type
class User(Node):
    id: strawberry.ID = global_id("User")
    email: str
    first_name: str
    last_name: str
    is_staff: bool
    is_active: bool = strawberry.field(description="Inactive accounts cannot sign in.")
    permissions: list[Permission] = computed(_permissions, list[Permission])
    addresses: list[Address] = computed(_addresses, list[Address])
    default_shipping_address: Address | None = computed(_default_shipping, Address | None)
    orders: OrderConnection = computed(_user_orders, OrderConnection, description="Newest first.")
    date_joined: datetime

    is_type_of = records_of(UserRecord)


# --------------------------------------------------------------------------- inputs


@strawberry.input
class AccountRegisterInput:
    email: str
    password: str
    first_name: str | None = None
    last_name: str | None = None


@strawberry.input
class AddressInput:
    first_name: str
    last_name: str
    company_name: str | None = None
    street_address_1: str = strawberry.field(name="streetAddress1")
    street_address_2: str | None = strawberry.field(default=None, name="streetAddress2")
    city: str
    postal_code: str
    country_code: str
    country_area: str | None = None
    phone: str | None = None


# --------------------------------------------------------------------------- payloads


@strawberry.type
class AccountRegisterPayload:
    user: User | None
    errors: list[AccountError]


@strawberry.type
class TokenCreatePayload:
    access_token: str | None
    refresh_token: str | None
    user: User | None
    errors: list[AccountError]


@strawberry.type
class TokenRefreshPayload:
    access_token: str | None
    refresh_token: str | None
    errors: list[AccountError]


@strawberry.type
class TokenRevokePayload:
    errors: list[AccountError]


@strawberry.type(description="Signs out every session of the user and returns a fresh one.")
class PasswordChangePayload:
    user: User | None
    access_token: str | None
    refresh_token: str | None
    errors: list[AccountError]


@strawberry.type
class RequestPasswordResetPayload:
    errors: list[AccountError]


@strawberry.type
class PasswordResetPayload:
    errors: list[AccountError]


@strawberry.type
class AddressCreatePayload:
    address: Address | None
    user: User | None
    errors: list[AccountError]


@strawberry.type
class AddressUpdatePayload:
    address: Address | None
    user: User | None
    errors: list[AccountError]


@strawberry.type
class AddressDeletePayload:
    address: Address | None
    user: User | None
    errors: list[AccountError]


# --------------------------------------------------------------------------- roots


@strawberry.type
class AccountQuery:
    @strawberry.field(description="The signed-in user; null when anonymous.")
    def me(self, info: Ctx) -> User | None:
        return r.me(info.context)  # type: ignore[return-value]


@strawberry.type
class AccountMutation:
    @strawberry.mutation
    async def account_register(
        self, info: Ctx, input: AccountRegisterInput
    ) -> AccountRegisterPayload:
        return await r.account_register(info.context, input)  # type: ignore[return-value]

    @strawberry.mutation(description="Sign in: a short-lived access token and a refresh token.")
    async def token_create(self, info: Ctx, email: str, password: str) -> TokenCreatePayload:
        return await r.token_create(info.context, email, password)  # type: ignore[return-value]

    @strawberry.mutation(description="Rotates the refresh token; an old one revokes the session.")
    async def token_refresh(self, info: Ctx, refresh_token: str) -> TokenRefreshPayload:
        return await r.token_refresh(info.context, refresh_token)  # type: ignore[return-value]

    @strawberry.mutation(description="Sign out: the session's tokens stop working at once.")
    async def token_revoke(self, info: Ctx, refresh_token: str) -> TokenRevokePayload:
        return await r.token_revoke(info.context, refresh_token)  # type: ignore[return-value]

    @strawberry.mutation
    async def password_change(
        self, info: Ctx, old_password: str, new_password: str
    ) -> PasswordChangePayload:
        return await r.password_change(  # type: ignore[return-value]
            info.context, old_password, new_password
        )

    @strawberry.mutation(description="The same answer whether or not the email has an account.")
    async def request_password_reset(self, info: Ctx, email: str) -> RequestPasswordResetPayload:
        return await r.request_password_reset(info.context, email)  # type: ignore[return-value]

    @strawberry.mutation
    async def password_reset(
        self, info: Ctx, token: str, new_password: str
    ) -> PasswordResetPayload:
        return await r.password_reset(info.context, token, new_password)  # type: ignore[return-value]

    @strawberry.mutation
    async def address_create(
        self, info: Ctx, input: AddressInput, set_default_shipping: bool | None = None
    ) -> AddressCreatePayload:
        return await r.address_create(  # type: ignore[return-value]
            info.context, input, set_default_shipping
        )

    @strawberry.mutation
    async def address_update(
        self,
        info: Ctx,
        id: strawberry.ID,
        input: AddressInput,
        set_default_shipping: bool | None = None,
    ) -> AddressUpdatePayload:
        return await r.address_update(  # type: ignore[return-value]
            info.context, id, input, set_default_shipping
        )

    @strawberry.mutation
    async def address_delete(self, info: Ctx, id: strawberry.ID) -> AddressDeletePayload:
        return await r.address_delete(info.context, id)  # type: ignore[return-value]
