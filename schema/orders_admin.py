"""Staff administration of orders (fulfil, cancel, refund), promo codes and shipping
methods, and the staff `promoCodes` list."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from models.checkout.admin import PromoCodeRecord
from models.money import money
from models.pagination import PageArgs
from resolvers import ids
from resolvers import orders_admin as r
from resolvers.context import Context
from schema.admin import StaffError, staff_mutation
from schema.catalog import Money
from schema.checkout import ShippingMethod
from schema.fields import computed, enum_of, global_id, records_of
from schema.orders import Order
from schema.relay import Connection, Node

Ctx = Info[Context, None]


@strawberry.enum
class PromoCodeKind(Enum):
    PERCENTAGE = strawberry.enum_value("PERCENTAGE", description="`value` is a percentage.")
    FIXED = strawberry.enum_value("FIXED", description="`value` is an amount of `currency`.")


def _value(root: strawberry.Parent[PromoCodeRecord]) -> Decimal:
    if root.kind == "PERCENTAGE":
        return Decimal(root.value).scaleb(-2)
    return money(root.value, root.currency).amount


@strawberry.type(description="A discount code checkouts can apply (case-insensitive).")
class PromoCode(Node):
    id: strawberry.ID = global_id("PromoCode")
    code: str = strawberry.field(description="Upper case; checkouts match it case-insensitively.")
    kind: PromoCodeKind = enum_of("kind", PromoCodeKind)
    value: Decimal = computed(
        _value, Decimal, description='PERCENTAGE: percent ("12.5"); FIXED: an amount.'
    )
    currency: str
    min_subtotal: Money = computed(
        lambda root: money(root.min_subtotal_amount, root.currency),
        Money,
        description="The smallest subtotal the code applies to.",
    )
    starts_at: datetime | None
    ends_at: datetime | None = strawberry.field(description="Expired from this moment on.")
    usage_limit: int | None = strawberry.field(description="null: unlimited.")
    used_count: int
    once_per_customer: bool
    created_at: datetime
    updated_at: datetime

    is_type_of = records_of(PromoCodeRecord)


@strawberry.input
class OrderFulfillLineInput:
    order_line_id: strawberry.ID
    quantity: int


@strawberry.input
class PromoCodeCreateInput:
    code: str = strawberry.field(description="Letters, digits, - and _; stored upper case.")
    kind: PromoCodeKind
    value: Decimal = strawberry.field(
        description="PERCENTAGE: 0 < percent <= 100 (2 decimals); FIXED: a positive amount."
    )
    min_subtotal: Decimal | None = None
    starts_at: datetime | None = strawberry.UNSET
    ends_at: datetime | None = strawberry.UNSET
    usage_limit: int | None = strawberry.field(
        default=strawberry.UNSET, description="Absent or null: unlimited."
    )
    once_per_customer: bool | None = None


@strawberry.input
class PromoCodeUpdateInput:
    code: str | None = None
    kind: PromoCodeKind | None = strawberry.field(
        default=None, description="Changing it needs `value` too."
    )
    value: Decimal | None = None
    min_subtotal: Decimal | None = None
    starts_at: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="null removes the start."
    )
    ends_at: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="null removes the end."
    )
    usage_limit: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="null: unlimited. Not below the times the code was used.",
    )
    once_per_customer: bool | None = None


@strawberry.input
class PromoCodeFilter:
    search: str | None = strawberry.field(default=None, description="Code fragment.")
    kind: PromoCodeKind | None = None


@strawberry.input
class ShippingMethodCreateInput:
    name: str
    price: Decimal
    countries: list[str] = strawberry.field(description="ISO 3166-1 alpha-2 codes.")
    free_above: Decimal | None = strawberry.field(
        default=None, description="Subtotals (after discount) from this amount ship free."
    )


@strawberry.input
class ShippingMethodUpdateInput:
    name: str | None = None
    price: Decimal | None = None
    countries: list[str] | None = strawberry.field(default=None, description="Replaces the list.")
    free_above: Decimal | None = strawberry.field(
        default=strawberry.UNSET, description="null: never free."
    )


@strawberry.type
class OrderFulfillPayload:
    order: Order | None
    errors: list[StaffError]


@strawberry.type
class OrderCancelPayload:
    order: Order | None
    errors: list[StaffError]


@strawberry.type
class OrderRefundPayload:
    order: Order | None
    errors: list[StaffError]


@strawberry.type
class PromoCodeCreatePayload:
    promo_code: PromoCode | None
    errors: list[StaffError]


@strawberry.type
class PromoCodeUpdatePayload:
    promo_code: PromoCode | None
    errors: list[StaffError]


@strawberry.type
class PromoCodeDeletePayload:
    promo_code: PromoCode | None = strawberry.field(description="The code as it was.")
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class ShippingMethodCreatePayload:
    shipping_method: ShippingMethod | None
    errors: list[StaffError]


@strawberry.type
class ShippingMethodUpdatePayload:
    shipping_method: ShippingMethod | None
    errors: list[StaffError]


@strawberry.type
class ShippingMethodDeletePayload:
    shipping_method: ShippingMethod | None = strawberry.field(description="The method as it was.")
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


def _deleted(value: Any) -> strawberry.ID | None:
    if value is None:
        return None
    name = "PromoCode" if isinstance(value, PromoCodeRecord) else "ShippingMethod"
    return strawberry.ID(ids.encode(name, value.id))


@strawberry.type
class OrdersAdminQuery:
    @strawberry.field(description="Promo codes by code. Needs MANAGE_DISCOUNTS.")
    async def promo_codes(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: PromoCodeFilter | None = None,
    ) -> Connection[PromoCode]:
        args = PageArgs(first=first, after=after, last=last, before=before)
        return await r.promo_codes(info.context, args=args, promo_filter=filter)  # type: ignore[return-value]


@strawberry.type
class OrdersAdminMutation:
    @staff_mutation(
        "MANAGE_ORDERS",
        "Ship the whole remaining order (`lines` null) or chosen lines and quantities; "
        "the status moves UNFULFILLED -> PARTIALLY_FULFILLED -> FULFILLED.",
    )
    async def order_fulfill(
        self,
        info: Ctx,
        id: strawberry.ID,
        lines: list[OrderFulfillLineInput] | None = None,
        tracking_number: str | None = None,
    ) -> OrderFulfillPayload:
        result = await r.order_fulfill(info.context, id, lines, tracking_number)
        return OrderFulfillPayload(order=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation(
        "MANAGE_ORDERS",
        "Cancel an UNFULFILLED order: its stock goes back and what was paid is refunded. "
        "Should the refund fail, the order stays canceled and the payload says so.",
    )
    async def order_cancel(self, info: Ctx, id: strawberry.ID) -> OrderCancelPayload:
        result = await r.order_cancel(info.context, id)
        return OrderCancelPayload(order=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation(
        "MANAGE_ORDERS",
        "Refund through the payment's gateway: everything left when `amount` is null, never "
        "more than was paid minus what was refunded already.",
    )
    async def order_refund(
        self, info: Ctx, id: strawberry.ID, amount: Decimal | None = None
    ) -> OrderRefundPayload:
        result = await r.order_refund(info.context, id, amount)
        return OrderRefundPayload(order=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation("MANAGE_DISCOUNTS", "A promo code in the shop's currency.")
    async def promo_code_create(
        self, info: Ctx, input: PromoCodeCreateInput
    ) -> PromoCodeCreatePayload:
        result = await r.promo_code_create(info.context, input)
        return PromoCodeCreatePayload(promo_code=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation("MANAGE_DISCOUNTS", "Change a promo code; left-out fields stay.")
    async def promo_code_update(
        self, info: Ctx, id: strawberry.ID, input: PromoCodeUpdateInput
    ) -> PromoCodeUpdatePayload:
        result = await r.promo_code_update(info.context, id, input)
        return PromoCodeUpdatePayload(promo_code=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation(
        "MANAGE_DISCOUNTS",
        "Delete a promo code. Orders keep the code they used; open checkouts lose it.",
    )
    async def promo_code_delete(self, info: Ctx, id: strawberry.ID) -> PromoCodeDeletePayload:
        result = await r.promo_code_delete(info.context, id)
        return PromoCodeDeletePayload(
            promo_code=result.value,  # type: ignore[arg-type]
            deleted_id=_deleted(result.value),
            errors=result.errors,  # type: ignore[arg-type]
        )

    @staff_mutation("MANAGE_SHIPPING", "A shipping method in the shop's currency.")
    async def shipping_method_create(
        self, info: Ctx, input: ShippingMethodCreateInput
    ) -> ShippingMethodCreatePayload:
        result = await r.shipping_method_create(info.context, input)
        return ShippingMethodCreatePayload(shipping_method=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation("MANAGE_SHIPPING", "Change a shipping method; left-out fields stay.")
    async def shipping_method_update(
        self, info: Ctx, id: strawberry.ID, input: ShippingMethodUpdateInput
    ) -> ShippingMethodUpdatePayload:
        result = await r.shipping_method_update(info.context, id, input)
        return ShippingMethodUpdatePayload(shipping_method=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation(
        "MANAGE_SHIPPING",
        "Delete a shipping method. Open checkouts that chose it have none again; orders "
        "keep the method's name.",
    )
    async def shipping_method_delete(
        self, info: Ctx, id: strawberry.ID
    ) -> ShippingMethodDeletePayload:
        result = await r.shipping_method_delete(info.context, id)
        return ShippingMethodDeletePayload(
            shipping_method=result.value,  # type: ignore[arg-type]
            deleted_id=_deleted(result.value),
            errors=result.errors,  # type: ignore[arg-type]
        )
