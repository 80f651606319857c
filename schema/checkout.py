"""Checkouts, shipping methods and the checkout mutations."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from models.checkout.pricing import ShippingMethodRecord
from models.checkout.queries import CheckoutLineRecord, CheckoutRecord
from models.money import Money as MoneyValue
from models.money import money
from resolvers import checkout as r
from resolvers import ids
from resolvers.context import Context
from schema.accounts import Address, AddressInput, User
from schema.catalog import Money, ProductVariant
from schema.fields import computed, enum_of, global_id, loaded, records_of
from schema.orders import Order
from schema.relay import Node

Ctx = Info[Context, None]


@strawberry.enum
class CheckoutErrorCode(Enum):
    INVALID = "INVALID"
    REQUIRED = "REQUIRED"
    NOT_FOUND = "NOT_FOUND"
    QUANTITY_OUT_OF_RANGE = "QUANTITY_OUT_OF_RANGE"
    TOO_MANY_LINES = "TOO_MANY_LINES"
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    PRODUCT_UNAVAILABLE = "PRODUCT_UNAVAILABLE"
    SHIPPING_METHOD_NOT_AVAILABLE = "SHIPPING_METHOD_NOT_AVAILABLE"
    PROMO_CODE_INVALID = "PROMO_CODE_INVALID"
    PROMO_CODE_EXPIRED = "PROMO_CODE_EXPIRED"
    PROMO_CODE_EXHAUSTED = "PROMO_CODE_EXHAUSTED"
    PROMO_CODE_MIN_SUBTOTAL = "PROMO_CODE_MIN_SUBTOTAL"
    PROMO_CODE_ALREADY_USED = "PROMO_CODE_ALREADY_USED"
    CHECKOUT_COMPLETED = "CHECKOUT_COMPLETED"
    CHECKOUT_IN_PROGRESS = "CHECKOUT_IN_PROGRESS"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    PAYMENT_ERROR = "PAYMENT_ERROR"


@strawberry.type
class CheckoutError:
    field: str | None = strawberry.field(description="camelCase input path, or null")
    code: CheckoutErrorCode = enum_of("code", CheckoutErrorCode)
    message: str


def _method_price(root: strawberry.Parent[ShippingMethodRecord]) -> MoneyValue:
    return money(root.price_amount, root.currency)


@strawberry.type
class ShippingMethod(Node):
    id: strawberry.ID = global_id("ShippingMethod")
    name: str
    price: Money = computed(_method_price, Money)
    countries: list[str] = computed(lambda root: list(root.countries), list[str])
    free_above: Money | None = computed(
        lambda root: (
            money(root.free_above_amount, root.currency)
            if root.free_above_amount is not None
            else None
        ),
        Money | None,
        description="Orders whose subtotal (after discount) reaches this ship free.",
    )

    is_type_of = records_of(ShippingMethodRecord)


async def _unit_price(root: strawberry.Parent[CheckoutLineRecord], info: Ctx) -> MoneyValue:
    variant = await info.context.catalog.any_variant_by_id.load(root.variant_id)
    assert variant is not None
    return money(variant.price_amount, variant.currency)


async def _line_total(root: strawberry.Parent[CheckoutLineRecord], info: Ctx) -> MoneyValue:
    variant = await info.context.catalog.any_variant_by_id.load(root.variant_id)
    assert variant is not None
    return money(variant.price_amount * root.quantity, variant.currency)


@strawberry.type
class CheckoutLine:
    id: strawberry.ID = global_id("CheckoutLine")
    variant: ProductVariant = loaded(
        lambda c: c.catalog.any_variant_by_id, "variant_id", ProductVariant
    )
    quantity: int
    unit_price: Money = computed(_unit_price, Money, description="Current price.")
    total_price: Money = computed(_line_total, Money)


def _totals_field(attr: str) -> Any:
    async def resolve(root: strawberry.Parent[CheckoutRecord], info: Ctx) -> MoneyValue:
        totals = await r.totals_of(info.context, root)
        return money(getattr(totals, attr), totals.currency)

    return computed(resolve, Money)


async def _checkout_quantity(root: strawberry.Parent[CheckoutRecord], info: Ctx) -> int:
    lines = await info.context.commerce.lines_by_checkout_id.load(root.id)
    return sum(line.quantity for line in lines)


async def _available_methods(
    root: strawberry.Parent[CheckoutRecord], info: Ctx
) -> list[ShippingMethodRecord]:
    return await r.available_shipping_methods(info.context, root)


@strawberry.type
class Checkout(Node):
    id: strawberry.ID = computed(
        lambda root: strawberry.ID(ids.encode("Checkout", root.token)), strawberry.ID
    )
    email: str | None
    user: User | None = loaded(lambda c: c.accounts.user_by_id, "user_id", User | None)
    lines: list[CheckoutLine] = loaded(
        lambda c: c.commerce.lines_by_checkout_id, "id", list[CheckoutLine]
    )
    quantity: int = computed(_checkout_quantity, int)
    shipping_address: Address | None = loaded(
        lambda c: c.commerce.address_by_id, "shipping_address_id", Address | None
    )
    shipping_method: ShippingMethod | None = loaded(
        lambda c: c.commerce.shipping_method_by_id, "shipping_method_id", ShippingMethod | None
    )
    available_shipping_methods: list[ShippingMethod] = computed(
        _available_methods, list[ShippingMethod]
    )
    promo_code: str | None
    subtotal: Money = _totals_field("subtotal")
    shipping_price: Money = _totals_field("shipping")
    discount: Money = _totals_field("discount")
    total: Money = _totals_field("total")
    created_at: datetime
    updated_at: datetime

    is_type_of = records_of(CheckoutRecord)


# --------------------------------------------------------------------------- inputs, payloads


@strawberry.input
class CheckoutLineInput:
    variant_id: strawberry.ID
    quantity: int


@strawberry.input
class CheckoutLineUpdateInput:
    line_id: strawberry.ID
    quantity: int = strawberry.field(description="0 removes the line")


@strawberry.input
class CheckoutCreateInput:
    lines: list[CheckoutLineInput]
    email: str | None = None


@strawberry.input
class PaymentInput:
    gateway: str
    token: str


def _payload(name: str) -> type:
    cls = type(
        name, (), {"__annotations__": {"checkout": Checkout | None, "errors": list[CheckoutError]}}
    )
    return strawberry.type(cls)


CheckoutCreatePayload = _payload("CheckoutCreatePayload")
CheckoutLinesAddPayload = _payload("CheckoutLinesAddPayload")
CheckoutLinesUpdatePayload = _payload("CheckoutLinesUpdatePayload")
CheckoutLinesDeletePayload = _payload("CheckoutLinesDeletePayload")
CheckoutEmailUpdatePayload = _payload("CheckoutEmailUpdatePayload")
CheckoutShippingAddressUpdatePayload = _payload("CheckoutShippingAddressUpdatePayload")
CheckoutShippingMethodUpdatePayload = _payload("CheckoutShippingMethodUpdatePayload")
CheckoutPromoCodeApplyPayload = _payload("CheckoutPromoCodeApplyPayload")
CheckoutPromoCodeRemovePayload = _payload("CheckoutPromoCodeRemovePayload")
CheckoutCustomerAttachPayload = _payload("CheckoutCustomerAttachPayload")


@strawberry.type
class CheckoutCompletePayload:
    order: Order | None
    errors: list[CheckoutError]


@strawberry.type
class CheckoutQuery:
    @strawberry.field(
        description="A guest checkout by its (unguessable) ID, or your own; else null."
    )
    async def checkout(self, info: Ctx, id: strawberry.ID) -> Checkout | None:
        return await r.checkout(info.context, id)  # type: ignore[return-value]

    @strawberry.field
    async def shipping_methods(self, info: Ctx) -> list[ShippingMethod]:
        return await r.shipping_methods(info.context)  # type: ignore[return-value]


@strawberry.type
class CheckoutMutation:
    @strawberry.mutation(description="Signed-in shoppers' checkouts are theirs at once.")
    async def checkout_create(self, info: Ctx, input: CheckoutCreateInput) -> CheckoutCreatePayload:  # type: ignore[valid-type]
        return await r.checkout_create(info.context, input)

    @strawberry.mutation
    async def checkout_lines_add(
        self, info: Ctx, checkout_id: strawberry.ID, lines: list[CheckoutLineInput]
    ) -> CheckoutLinesAddPayload:  # type: ignore[valid-type]
        return await r.checkout_lines_add(info.context, checkout_id, lines)

    @strawberry.mutation(description="Quantity 0 removes the line.")
    async def checkout_lines_update(
        self, info: Ctx, checkout_id: strawberry.ID, lines: list[CheckoutLineUpdateInput]
    ) -> CheckoutLinesUpdatePayload:  # type: ignore[valid-type]
        return await r.checkout_lines_update(info.context, checkout_id, lines)

    @strawberry.mutation
    async def checkout_lines_delete(
        self, info: Ctx, checkout_id: strawberry.ID, line_ids: list[strawberry.ID]
    ) -> CheckoutLinesDeletePayload:  # type: ignore[valid-type]
        return await r.checkout_lines_delete(info.context, checkout_id, line_ids)

    @strawberry.mutation
    async def checkout_email_update(
        self, info: Ctx, checkout_id: strawberry.ID, email: str
    ) -> CheckoutEmailUpdatePayload:  # type: ignore[valid-type]
        return await r.checkout_email_update(info.context, checkout_id, email)

    @strawberry.mutation
    async def checkout_shipping_address_update(
        self, info: Ctx, checkout_id: strawberry.ID, address: AddressInput
    ) -> CheckoutShippingAddressUpdatePayload:  # type: ignore[valid-type]
        return await r.checkout_shipping_address_update(info.context, checkout_id, address)

    @strawberry.mutation
    async def checkout_shipping_method_update(
        self, info: Ctx, checkout_id: strawberry.ID, shipping_method_id: strawberry.ID
    ) -> CheckoutShippingMethodUpdatePayload:  # type: ignore[valid-type]
        return await r.checkout_shipping_method_update(
            info.context, checkout_id, shipping_method_id
        )

    @strawberry.mutation
    async def checkout_promo_code_apply(
        self, info: Ctx, checkout_id: strawberry.ID, promo_code: str
    ) -> CheckoutPromoCodeApplyPayload:  # type: ignore[valid-type]
        return await r.checkout_promo_code_apply(info.context, checkout_id, promo_code)

    @strawberry.mutation
    async def checkout_promo_code_remove(
        self, info: Ctx, checkout_id: strawberry.ID
    ) -> CheckoutPromoCodeRemovePayload:  # type: ignore[valid-type]
        return await r.checkout_promo_code_remove(info.context, checkout_id)

    @strawberry.mutation(
        description="After signing in: a guest checkout becomes the signed-in customer's."
    )
    async def checkout_customer_attach(
        self, info: Ctx, checkout_id: strawberry.ID
    ) -> CheckoutCustomerAttachPayload:  # type: ignore[valid-type]
        return await r.checkout_customer_attach(info.context, checkout_id)

    @strawberry.mutation(
        description="Pays and places the order, exactly once per idempotency key: a retry "
        "with the same key returns the same order and never charges twice."
    )
    async def checkout_complete(
        self,
        info: Ctx,
        checkout_id: strawberry.ID,
        payment: PaymentInput,
        idempotency_key: str,
    ) -> CheckoutCompletePayload:
        return await r.checkout_complete(  # type: ignore[return-value]
            info.context, checkout_id, payment, idempotency_key
        )
