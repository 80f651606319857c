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


def _loader(ctx: Context, type_name: str) -> Any:
    catalog, accounts = ctx.catalog, ctx.accounts
    return {
        "Product": lambda: catalog.product_by_id,
        "ProductVariant": lambda: catalog.variant_by_id,
        "Category": lambda: catalog.category_by_id,
        "Collection": lambda: catalog.collection_by_id,
        "User": lambda: accounts.user_by_id,
        "Address": lambda: accounts.address_by_id,
    }[type_name]()


async def node(ctx: Context, gid: str) -> object | None:
    type_name, key = ids.decode_any(gid)
    return await _loader(ctx, type_name).load(key)


async def nodes(ctx: Context, gids: Sequence[str]) -> list[object | None]:
    if len(gids) > MAX_NODES:
        raise InvalidInput(f"`ids` may hold at most {MAX_NODES} IDs", field="ids")
    decoded = [ids.decode_any(gid, field="ids") for gid in gids]
    return list(await asyncio.gather(*(_loader(ctx, t).load(k) for t, k in decoded)))
