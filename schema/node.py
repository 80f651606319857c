"""`node` and `nodes`: any object by global ID, with the same visibility as typed fields."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from resolvers import node as r
from resolvers.context import Context
from schema.relay import Node


@strawberry.type
class NodeQuery:
    @strawberry.field
    async def node(self, info: Info[Context, None], id: strawberry.ID) -> Node | None:
        return await r.node(info.context, id)  # type: ignore[return-value]

    @strawberry.field
    async def nodes(self, info: Info[Context, None], ids: list[strawberry.ID]) -> list[Node | None]:
        return await r.nodes(info.context, ids)  # type: ignore[return-value]
