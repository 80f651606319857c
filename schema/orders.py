"""Orders, their lines and payments; `order` and `orders` (MANAGE_ORDERS)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from models.orders.admin import FulfillmentRecord
from models.orders.queries import OrderRecord, PaymentRecord
from resolvers import orders as r
from resolvers.context import Context
from schema.catalog import Money, ProductVariant, SortDirection
from schema.fields import enum_of, global_id, loaded, money_of, records_of
from schema.relay import Connection, Node

if TYPE_CHECKING:
    from schema.accounts import Address, User

Ctx = Info[Context, None]
AddressType = Annotated["Address", strawberry.lazy("schema.accounts")]
UserType = Annotated["User", strawberry.lazy("schema.accounts")]


@strawberry.enum
class OrderStatus(Enum):
    UNFULFILLED = "UNFULFILLED"
    PARTIALLY_FULFILLED = "PARTIALLY_FULFILLED"
    FULFILLED = "FULFILLED"
    CANCELED = "CANCELED"


@strawberry.enum
class PaymentStatus(Enum):
    PENDING = "PENDING"
    PAID = "PAID"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"


@strawberry.enum
class OrderSortField(Enum):
    NUMBER = "NUMBER"
    CREATED_AT = "CREATED_AT"
    TOTAL = "TOTAL"


@strawberry.input
class OrderSortBy:
    field: OrderSortField
    direction: SortDirection


@strawberry.input
class OrderFilter:
    status: list[OrderStatus] | None = None
    payment_status: list[PaymentStatus] | None = None
    customer: str | None = strawberry.field(default=None, description="email or name fragment")
    created_gte: datetime | None = None
    created_lte: datetime | None = None


@strawberry.type
class Payment(Node):
    id: strawberry.ID = global_id("Payment")
    gateway: str
    status: PaymentStatus = enum_of("status", PaymentStatus)
    amount: Money = money_of("amount", Money)
    refunded_amount: Money = money_of("refunded_amount", Money)
    psp_reference: str | None
    created_at: datetime

    is_type_of = records_of(PaymentRecord)


@strawberry.type
class OrderLine:
    id: strawberry.ID = global_id("OrderLine")
    product_name: str
    variant_name: str
    sku: str
    quantity: int
    quantity_fulfilled: int
    unit_price: Money = money_of("unit_amount", Money)
    total_price: Money = money_of("total_amount", Money)
    variant: ProductVariant | None = loaded(
        lambda c: c.catalog.any_variant_by_id,
        "variant_id",
        ProductVariant | None,
        description="null once the variant is deleted",
    )


@strawberry.type
class FulfillmentLine:
    order_line: OrderLine
    quantity: int = strawberry.field(description="Units of the order line in this shipment.")


@strawberry.type(description="One shipment of (part of) an order.")
class Fulfillment(Node):
    id: strawberry.ID = global_id("Fulfillment")
    tracking_number: str | None
    created_at: datetime
    lines: list[FulfillmentLine] = loaded(
        lambda c: c.commerce.fulfillment_lines_by_fulfillment_id, "id", list[FulfillmentLine]
    )

    is_type_of = records_of(FulfillmentRecord)


@strawberry.type
class Order(Node):
    id: strawberry.ID = global_id("Order")
    number: str
    status: OrderStatus = enum_of("status", OrderStatus)
    payment_status: PaymentStatus = enum_of("payment_status", PaymentStatus)
    user: UserType | None = loaded(lambda c: c.accounts.user_by_id, "user_id", UserType | None)
    email: str
    lines: list[OrderLine] = loaded(lambda c: c.commerce.lines_by_order_id, "id", list[OrderLine])
    shipping_address: AddressType | None = loaded(
        lambda c: c.commerce.address_by_id, "shipping_address_id", AddressType | None
    )
    shipping_method_name: str | None
    subtotal: Money = money_of("subtotal_amount", Money)
    shipping_price: Money = money_of("shipping_amount", Money)
    discount: Money = money_of("discount_amount", Money)
    total: Money = money_of("total_amount", Money)
    payments: list[Payment] = loaded(lambda c: c.commerce.payments_by_order_id, "id", list[Payment])
    fulfillments: list[Fulfillment] = loaded(
        lambda c: c.commerce.fulfillments_by_order_id,
        "id",
        list[Fulfillment],
        description="Shipments, oldest first.",
    )
    created_at: datetime
    updated_at: datetime

    is_type_of = records_of(OrderRecord)


@strawberry.type
class OrderQuery:
    @strawberry.field(description="Your own order, or any order with MANAGE_ORDERS.")
    async def order(self, info: Ctx, id: strawberry.ID) -> Order | None:
        return await r.order(info.context, id)  # type: ignore[return-value]

    @strawberry.field(description="Every order. Needs MANAGE_ORDERS.")
    async def orders(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: OrderFilter | None = None,
        sort_by: OrderSortBy | None = None,
    ) -> Connection[Order]:
        page = await r.orders(
            info.context,
            first=first,
            after=after,
            last=last,
            before=before,
            order_filter=filter,
            sort=sort_by,
        )
        return page  # type: ignore[return-value]
