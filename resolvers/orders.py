"""Order resolvers: one order (owner or MANAGE_ORDERS), every order (MANAGE_ORDERS), a
customer's orders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from models.errors import InvalidInput
from models.orders import queries as q
from models.orders.queries import OrderFilter, OrderRecord
from models.pagination import Page, PageArgs
from resolvers import ids
from resolvers.context import Context

MAX_CUSTOMER_FRAGMENT = 254


class OrderFilterInput(Protocol):
    @property
    def status(self) -> Sequence[Any] | None: ...
    @property
    def payment_status(self) -> Sequence[Any] | None: ...
    @property
    def customer(self) -> str | None: ...
    @property
    def created_gte(self) -> datetime | None: ...
    @property
    def created_lte(self) -> datetime | None: ...


async def order(ctx: Context, gid: str) -> OrderRecord | None:
    return await ctx.commerce.order_by_id.load(ids.decode(gid, "Order"))


def _filter(value: OrderFilterInput | None) -> OrderFilter | None:
    if value is None:
        return None
    customer = value.customer.strip() if value.customer else None
    if customer is not None and len(customer) > MAX_CUSTOMER_FRAGMENT:
        raise InvalidInput("`filter.customer` is too long", field="filter.customer")
    for name in ("created_gte", "created_lte"):
        moment = getattr(value, name)
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput("dates need a UTC offset", field=f"filter.{name}")
    return OrderFilter(
        statuses=tuple(s.value for s in value.status) if value.status is not None else None,
        payment_statuses=(
            tuple(s.value for s in value.payment_status)
            if value.payment_status is not None
            else None
        ),
        customer=customer or None,
        created_gte=value.created_gte,
        created_lte=value.created_lte,
    )


async def orders(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    order_filter: OrderFilterInput | None,
    sort: Any,
) -> Page[OrderRecord]:
    ctx.require_permission("MANAGE_ORDERS")
    args = PageArgs(first=first, after=after, last=last, before=before)
    window = (
        q.order_window(args, field=sort.field.value, descending=sort.direction.value == "DESC")
        if sort is not None
        else q.order_window(args)
    )
    return await q.list_orders(
        ctx.db, window=window, owner_id=None, order_filter=_filter(order_filter)
    )


async def user_orders(
    ctx: Context, user_id: int, *, first: int | None, after: str | None, last: int | None,
    before: str | None, selected: frozenset[str] = frozenset(),
) -> Page[OrderRecord]:  # fmt: skip
    """A customer's orders, newest first: for that customer, or staff with MANAGE_ORDERS.
    `selected`: the fields asked of each order (schema.lookahead)."""
    viewer = ctx.require_viewer()
    if viewer.id != user_id:
        ctx.require_permission("MANAGE_ORDERS")
    window = q.order_window(PageArgs(first=first, after=after, last=last, before=before))
    embed_lines = q.embeds_lines(ctx.db.dialect, selected)
    return await ctx.commerce.orders_of(user_id, window, embed_lines=embed_lines)
