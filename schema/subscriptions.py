"""The Subscription root: order and stock updates over WebSocket (`graphql-transport-ws`,
see schema/ws.py for the connection: sign-in, origins, the per-connection cap)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry.types import Info

from resolvers import subscriptions as r
from resolvers.context import Context
from schema.catalog import ProductVariant
from schema.orders import Order

Ctx = Info[Context, None]


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "The order each time it or one of its payments changes. For the order's owner, "
            "or with MANAGE_ORDERS."
        )
    )
    async def order_updated(
        self, info: Ctx, order_id: strawberry.ID
    ) -> AsyncGenerator[Order, None]:
        return await r.order_updated(info.context, order_id)  # type: ignore[return-value]

    @strawberry.subscription(description="Every new order. Needs MANAGE_ORDERS.")
    async def order_created(self, info: Ctx) -> AsyncGenerator[Order, None]:
        return await r.order_created(info.context)  # type: ignore[return-value]

    @strawberry.subscription(
        description=(
            "Each of these variants (at most 100) whenever its stock changes. Variants the "
            "viewer may not see, and unknown IDs, never fire."
        )
    )
    async def variant_stock_changed(
        self, info: Ctx, variant_ids: list[strawberry.ID]
    ) -> AsyncGenerator[ProductVariant, None]:
        return await r.variant_stock_changed(info.context, variant_ids)  # type: ignore[return-value]
