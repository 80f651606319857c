"""Orders, their lines and payments; `order` and `orders` (MANAGE_ORDERS)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.types import Info

from models.accounts.queries import AddressRecord, UserRecord
from models.catalog.queries import VariantRecord
from models.money import Money as MoneyValue
from models.money import money
from models.orders.queries import OrderLineRecord, OrderRecord, PaymentRecord
from resolvers import orders as r
from resolvers.context import Context
from schema.catalog import Money, ProductVariant, SortDirection
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


def field_of(resolver: Any, graphql_type: Any, **kw: Any) -> Any:
    return strawberry.field(resolver=resolver, graphql_type=graphql_type, **kw)


def gid_field(type_name: str) -> Any:
    from resolvers import ids

    def resolve(root: strawberry.Parent[Any]) -> strawberry.ID:
        return strawberry.ID(ids.encode(type_name, root.id))

    return field_of(resolve, strawberry.ID)


def _money(attr: str) -> Any:
    def resolve(root: strawberry.Parent[Any]) -> MoneyValue:
        return money(getattr(root, attr), root.currency)

    return field_of(resolve, Money)


@strawberry.type
class Payment(Node):
    id: strawberry.ID = gid_field("Payment")
    gateway: str
    status: PaymentStatus = field_of(lambda root: PaymentStatus(root.status), PaymentStatus)
    amount: Money = _money("amount")
    refunded_amount: Money = _money("refunded_amount")
    psp_reference: str | None
    created_at: datetime

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, PaymentRecord)


def _line_variant(
    root: strawberry.Parent[OrderLineRecord], info: Ctx
) -> Awaitable[VariantRecord | None] | None:
    if root.variant_id is None:
        return None
    return info.context.catalog.any_variant_by_id.load(root.variant_id)


@strawberry.type
class OrderLine:
    id: strawberry.ID = gid_field("OrderLine")
    product_name: str
    variant_name: str
    sku: str
    quantity: int
    quantity_fulfilled: int
    unit_price: Money = _money("unit_amount")
    total_price: Money = _money("total_amount")
    variant: ProductVariant | None = field_of(
        _line_variant, ProductVariant | None, description="null once the variant is deleted"
    )


def _order_user(
    root: strawberry.Parent[OrderRecord], info: Ctx
) -> Awaitable[UserRecord | None] | None:
    if root.user_id is None:
        return None
    return info.context.accounts.user_by_id.load(root.user_id)


def _order_address(
    root: strawberry.Parent[OrderRecord], info: Ctx
) -> Awaitable[AddressRecord | None] | None:
    if root.shipping_address_id is None:
        return None
    return info.context.commerce.address_by_id.load(root.shipping_address_id)


def _order_lines(
    root: strawberry.Parent[OrderRecord], info: Ctx
) -> Awaitable[list[OrderLineRecord]]:
    return info.context.commerce.lines_by_order_id.load(root.id)


def _order_payments(
    root: strawberry.Parent[OrderRecord], info: Ctx
) -> Awaitable[list[PaymentRecord]]:
    return info.context.commerce.payments_by_order_id.load(root.id)


@strawberry.type
class Order(Node):
    id: strawberry.ID = gid_field("Order")
    number: str
    status: OrderStatus = field_of(lambda root: OrderStatus(root.status), OrderStatus)
    payment_status: PaymentStatus = field_of(
        lambda root: PaymentStatus(root.payment_status), PaymentStatus
    )
    user: UserType | None = field_of(_order_user, UserType | None)
    email: str
    lines: list[OrderLine] = field_of(_order_lines, list[OrderLine])
    shipping_address: AddressType | None = field_of(_order_address, AddressType | None)
    shipping_method_name: str | None
    subtotal: Money = _money("subtotal_amount")
    shipping_price: Money = _money("shipping_amount")
    discount: Money = _money("discount_amount")
    total: Money = _money("total_amount")
    payments: list[Payment] = field_of(_order_payments, list[Payment])
    created_at: datetime
    updated_at: datetime

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, OrderRecord)


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
