"""Subscription resolvers: who may open a subscription, and the event streams behind them.

A WebSocket connection signs in once, in `connection_init` (`open_connection`); each
operation on it then runs with its own `SubscriptionContext` (`operation_context`), whose
viewer is checked again before every private event is delivered: an expired access token,
a revoked session or a lost permission ends the subscription with UNAUTHENTICATED or
FORBIDDEN instead of delivering.

Events come from `db.events` (models/events.py). Each stream filters on the event payload
(ids) before it touches the database, takes every event already queued in one go (a
refund's PAYMENT_CHANGED and ORDER_UPDATED arrive together and are delivered once), and
loads what it delivers through fresh loaders with the viewer's visibility rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models import telemetry
from models.accounts import queries as accounts
from models.accounts.queries import UserRecord
from models.accounts.tokens import InvalidToken, verify_access_token
from models.catalog.queries import VariantRecord
from models.errors import Forbidden, InvalidInput, NotAuthenticated
from models.events import (
    ORDER_CREATED,
    ORDER_UPDATED,
    PAYMENT_CHANGED,
    VARIANT_STOCK_CHANGED,
    Event,
)
from models.orders.queries import OrderRecord
from resolvers import ids
from resolvers.accounts import authenticate
from resolvers.context import Context

logger = logging.getLogger("shopql.subscriptions")

MAX_VARIANT_IDS = 100
MAX_AUTHORIZATION = 4096
# Events taken from the queue in one go (they share one reload per subscriber).
MAX_BATCH = 500
ORDER_HIDDEN = "no order with this ID that you may follow"
TOKEN_ENDED = "your access token expired or was revoked: subscribe again with a new token"


class ConnectionRefused(Exception):
    """The credentials sent in `connection_init` are not acceptable (close 4403)."""


@dataclass(eq=False)
class WsConnection:
    """The sign-in of one WebSocket connection; shared by its operations."""

    user_id: int | None = None
    session_id: str | None = None
    expires_at: float = 0.0
    # Set once the credentials stopped counting ("expired" or "revoked"); for good.
    ended: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.user_id is not None


@dataclass(eq=False)
class SubscriptionContext(Context):
    """The context of one operation on a WebSocket connection."""

    connection: WsConnection = field(default_factory=WsConnection)

    def refresh(self, viewer: UserRecord | None) -> None:
        """Before each delivery: the viewer as just checked, and no loader or memo
        holding what an earlier event loaded."""
        self.viewer = viewer
        if viewer is None:
            self.session_id = None
            self.auth_error = self.connection.ended
        else:
            self.session_id = self.connection.session_id
        self.drop_loaders()
        self.cache.clear()


# --------------------------------------------------------------------------- connection


async def open_connection(ctx: Context, params: dict[str, Any]) -> WsConnection:
    """The connection's sign-in from `connectionParams.authorization` ("Bearer <token>"):
    anonymous without one; ConnectionRefused for a malformed, invalid, expired or revoked
    token (the same check as the HTTP `Authorization` header)."""
    raw = params.get("authorization", params.get("Authorization"))
    if raw is None:
        return WsConnection()
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_AUTHORIZATION:
        raise ConnectionRefused("malformed authorization")
    await authenticate(ctx, raw)
    viewer = ctx.viewer
    if viewer is None or ctx.session_id is None:
        raise ConnectionRefused(ctx.auth_error or "invalid token")
    token = raw.strip().partition(" ")[2].strip()
    try:
        claims = verify_access_token(token, secret=ctx.settings.secret_key)
    except InvalidToken:  # authenticate just accepted it; only a clock edge gets here
        raise ConnectionRefused("invalid or expired token") from None
    return WsConnection(
        user_id=viewer.id, session_id=ctx.session_id, expires_at=float(claims.expires_at)
    )


async def current_viewer(ctx: Context, connection: WsConnection) -> UserRecord | None:
    """The connection's user as of now: None when anonymous, or once its access token
    has expired or its session was revoked (or the user deactivated). One SQL statement."""
    if connection.user_id is None or connection.session_id is None or connection.ended:
        return None
    if time.time() >= connection.expires_at:
        connection.ended = "your access token expired"
        return None
    async with ctx.db.read() as conn:
        viewer = await accounts.viewer_for_session(
            conn, user_id=connection.user_id, session_id=connection.session_id
        )
    if viewer is None:
        connection.ended = "your session was revoked"
    return viewer


async def operation_context(base: Context, connection: WsConnection) -> SubscriptionContext:
    """A fresh context for one operation on the connection, signed in as of now."""
    ctx = SubscriptionContext(
        db=base.db,
        settings=base.settings,
        services=base.services,
        request=base.request,
        response=base.response,
        sql=base.sql,
        client_ip=base.client_ip,
        connection=connection,
    )
    ctx.refresh(await current_viewer(ctx, connection))
    return ctx


def _connection_of(ctx: Context) -> WsConnection:
    if isinstance(ctx, SubscriptionContext):
        return ctx.connection
    return WsConnection()  # not over a WebSocket: nobody to re-check


async def _recheck(ctx: Context, connection: WsConnection) -> UserRecord | None:
    viewer = await current_viewer(ctx, connection)
    if isinstance(ctx, SubscriptionContext):
        ctx.refresh(viewer)
    else:
        ctx.viewer = viewer
    return viewer


def _require(ctx: Context, connection: WsConnection, permission: str | None) -> UserRecord:
    """The viewer, or the error that ends a private subscription."""
    if ctx.viewer is None:
        if connection.ended:
            raise NotAuthenticated(TOKEN_ENDED)
        return ctx.require_viewer()  # raises UNAUTHENTICATED
    if permission is not None:
        return ctx.require_permission(permission)
    return ctx.viewer


# --------------------------------------------------------------------------- events


async def _next_batch(queue: asyncio.Queue[Event]) -> list[Event]:
    """The next event and every one queued behind it (up to MAX_BATCH)."""
    batch = [await queue.get()]
    while len(batch) < MAX_BATCH and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


def _int_id(value: object) -> int | None:
    """An id from an event payload (which may have crossed Redis as JSON)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def order_ids_updated(events: Iterable[Event]) -> set[int]:
    """Orders an ORDER_UPDATED or PAYMENT_CHANGED event of the batch is about."""
    found: set[int] = set()
    for event in events:
        if event.name in (ORDER_UPDATED, PAYMENT_CHANGED):
            order_id = _int_id(event.payload.get("order_id"))
            if order_id is not None:
                found.add(order_id)
    return found


def order_ids_created(events: Iterable[Event]) -> list[int]:
    found: list[int] = []
    for event in events:
        if event.name == ORDER_CREATED:
            order_id = _int_id(event.payload.get("order_id"))
            if order_id is not None and order_id not in found:
                found.append(order_id)
    return found


def variant_ids_changed(events: Iterable[Event], wanted: frozenset[int]) -> list[int]:
    """Variants of `wanted` whose stock an event of the batch changed, first seen first."""
    found: list[int] = []
    for event in events:
        if event.name != VARIANT_STOCK_CHANGED:
            continue
        changed = event.payload.get("variant_ids")
        if not isinstance(changed, list):
            continue
        for value in changed:
            variant_id = _int_id(value)
            if variant_id in wanted and variant_id not in found:
                found.append(variant_id)
    return found


# --------------------------------------------------------------------------- subscriptions


async def order_updated(ctx: Context, order_gid: str) -> AsyncIterator[OrderRecord]:
    """The order each time it (or one of its payments) changes. Needs the order's owner
    or MANAGE_ORDERS; a missing order and someone else's get the same FORBIDDEN."""
    order_id = ids.decode(order_gid, "Order", field="orderId")
    connection = _connection_of(ctx)
    _require(ctx, connection, None)
    if await ctx.commerce.order_by_id.load(order_id) is None:
        raise Forbidden(ORDER_HIDDEN)
    return _order_updates(ctx, connection, order_id)


async def _order_updates(
    ctx: Context, connection: WsConnection, order_id: int
) -> AsyncIterator[OrderRecord]:
    async with ctx.db.events.subscribe() as queue:
        telemetry.subscription_opened()
        try:
            while True:
                batch = await _next_batch(queue)
                if order_id not in order_ids_updated(batch):
                    continue
                await _recheck(ctx, connection)
                _require(ctx, connection, None)
                order = await ctx.commerce.order_by_id.load(order_id)
                if order is None:  # MANAGE_ORDERS lost, or the order is gone
                    raise Forbidden(ORDER_HIDDEN)
                yield order
        finally:
            telemetry.subscription_closed()


async def order_created(ctx: Context) -> AsyncIterator[OrderRecord]:
    """Every new order. Needs MANAGE_ORDERS."""
    connection = _connection_of(ctx)
    _require(ctx, connection, "MANAGE_ORDERS")
    return _orders_created(ctx, connection)


async def _orders_created(ctx: Context, connection: WsConnection) -> AsyncIterator[OrderRecord]:
    async with ctx.db.events.subscribe() as queue:
        telemetry.subscription_opened()
        try:
            while True:
                created = order_ids_created(await _next_batch(queue))
                if not created:
                    continue
                await _recheck(ctx, connection)
                _require(ctx, connection, "MANAGE_ORDERS")
                for order in await ctx.commerce.order_by_id.load_many(created):
                    if order is not None:
                        yield order
        finally:
            telemetry.subscription_closed()


def _variant_keys(variant_gids: Sequence[str]) -> frozenset[int]:
    if not variant_gids:
        raise InvalidInput("pass at least one variant ID", field="variantIds")
    if len(variant_gids) > MAX_VARIANT_IDS:
        raise InvalidInput(
            f"`variantIds` may hold at most {MAX_VARIANT_IDS} IDs", field="variantIds"
        )
    keys = {ids.decode(gid, "ProductVariant", field="variantIds") for gid in variant_gids}
    keys.discard(ids.MISSING)
    return frozenset(keys)


async def variant_stock_changed(
    ctx: Context, variant_gids: Sequence[str]
) -> AsyncIterator[VariantRecord]:
    """Each of these variants whenever its stock changes. Open to everyone; variants of
    unpublished products are delivered only to MANAGE_PRODUCTS, and unknown IDs simply
    never fire (the answer does not reveal which IDs exist)."""
    wanted = _variant_keys(variant_gids)
    return _variant_changes(ctx, _connection_of(ctx), wanted)


async def _variant_changes(
    ctx: Context, connection: WsConnection, wanted: frozenset[int]
) -> AsyncIterator[VariantRecord]:
    async with ctx.db.events.subscribe() as queue:
        telemetry.subscription_opened()
        try:
            while True:
                changed = variant_ids_changed(await _next_batch(queue), wanted)
                if not changed:
                    continue
                if connection.signed_in:  # visibility follows the sign-in as of now
                    await _recheck(ctx, connection)
                elif isinstance(ctx, SubscriptionContext):
                    ctx.refresh(None)
                for variant in await ctx.catalog.variant_by_id.load_many(changed):
                    if variant is not None:
                        yield variant
        finally:
            telemetry.subscription_closed()
