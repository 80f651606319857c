"""`node` / `nodes`: any object by global ID through the same viewer-scoped loaders the
typed fields use, so visibility rules cannot be bypassed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from models.errors import InvalidInput
from resolvers import ids
from resolvers.context import Context

MAX_NODES = 100


_LOADERS = {
    "Product": lambda ctx: ctx.catalog.product_by_id,
    "ProductVariant": lambda ctx: ctx.catalog.variant_by_id,
    "Category": lambda ctx: ctx.catalog.category_by_id,
    "Collection": lambda ctx: ctx.catalog.collection_by_id,
    "User": lambda ctx: ctx.accounts.user_by_id,
    "Address": lambda ctx: ctx.accounts.address_by_id,
    "Checkout": lambda ctx: ctx.commerce.checkout_by_token,
    "Order": lambda ctx: ctx.commerce.order_by_id,
    "Payment": lambda ctx: ctx.commerce.payment_by_id,
    "ShippingMethod": lambda ctx: ctx.commerce.shipping_method_by_id,
    "Fulfillment": lambda ctx: ctx.commerce.fulfillment_by_id,
    "PromoCode": lambda ctx: ctx.commerce.promo_code_by_id,
    "AuditEntry": lambda ctx: ctx.audit.entry_by_id,
    "Webhook": lambda ctx: ctx.webhooks.webhook_by_id,
    "WebhookDelivery": lambda ctx: ctx.webhooks.delivery_by_id,
}


def _loader(ctx: Context, type_name: str) -> Any:
    found = _LOADERS.get(type_name)
    if found is None:  # a real type that is not a Node (CheckoutLine, OrderLine)
        raise InvalidInput("`id` is not the ID of an object `node` can fetch", field="id")
    return found(ctx)


async def node(ctx: Context, gid: str) -> object | None:
    type_name, key = ids.decode_any(gid)
    return await _loader(ctx, type_name).load(key)


async def nodes(ctx: Context, gids: Sequence[str]) -> list[object | None]:
    if len(gids) > MAX_NODES:
        raise InvalidInput(f"`ids` may hold at most {MAX_NODES} IDs", field="ids")
    decoded = [ids.decode_any(gid, field="ids") for gid in gids]
    return list(await asyncio.gather(*(_loader(ctx, t).load(k) for t, k in decoded)))
