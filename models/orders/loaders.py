"""Per-request DataLoaders for orders, checkouts and payments, scoped to the viewer."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from models.accounts.queries import AddressRecord
from models.checkout import admin as ca
from models.checkout import queries as cq
from models.checkout.admin import PromoCodeRecord
from models.checkout.pricing import PromoRecord, ShippingMethodRecord
from models.checkout.queries import CheckoutLineRecord, CheckoutRecord
from models.dataloader import DataLoader, cached_property
from models.db import Database
from models.grouping import prime_embedded
from models.orders import admin as oa
from models.orders import queries as q
from models.orders.admin import FulfillmentLineRecord, FulfillmentRecord
from models.orders.queries import OrderLineRecord, OrderRecord, PaymentRecord
from models.pagination import Page, Window


async def _nothing(keys: list[Any]) -> list[None]:
    """The batch of a loader the viewer may not use: null for every key, no SQL."""
    return [None] * len(keys)


class CommerceLoaders:
    """`viewer_id` scopes checkouts and orders; `all_orders` is MANAGE_ORDERS;
    `all_promo_codes` is MANAGE_DISCOUNTS."""

    def __init__(
        self, db: Database, *, viewer_id: int | None, all_orders: bool, all_promo_codes: bool
    ) -> None:
        self.db = db
        self.viewer_id = viewer_id
        self.all_orders = all_orders
        self.all_promo_codes = all_promo_codes
        self._order_windows: dict[Hashable, tuple[Window, bool]] = {}

    def _batch(self, fetch: Any, default: Any = None) -> DataLoader[Any, Any]:
        db = self.db

        async def batch(keys: list[Any]) -> list[Any]:
            async with db.read() as conn:
                found = await fetch(conn, keys)
            return [found.get(key, default) for key in keys]

        return DataLoader(batch)

    @cached_property
    def checkout_by_token(self) -> DataLoader[str, CheckoutRecord | None]:
        viewer = self.viewer_id
        return self._batch(
            lambda conn, keys: cq.checkouts_by_tokens(conn, tokens=keys, viewer_id=viewer)
        )

    @cached_property
    def lines_by_checkout_id(self) -> DataLoader[int, list[CheckoutLineRecord]]:
        return self._batch(lambda conn, keys: cq.lines_by_checkout_ids(conn, checkout_ids=keys), [])

    @cached_property
    def shipping_method_by_id(self) -> DataLoader[int, ShippingMethodRecord | None]:
        return self._batch(lambda conn, keys: cq.shipping_methods_by_ids(conn, ids=keys))

    @cached_property
    def promo_by_code(self) -> DataLoader[str, PromoRecord | None]:
        return self._batch(lambda conn, keys: cq.promos_by_codes(conn, codes=keys))

    @cached_property
    def promo_code_by_id(self) -> DataLoader[int, PromoCodeRecord | None]:
        """Promo codes by ID (for `node`): MANAGE_DISCOUNTS only, as `promoCodes`. For
        anyone else every key is null and nothing is read."""
        if not self.all_promo_codes:
            return DataLoader(_nothing)
        return self._batch(lambda conn, keys: ca.promo_codes_by_ids(conn, ids=keys))

    @cached_property
    def address_by_id(self) -> DataLoader[int, AddressRecord | None]:
        """Addresses of checkouts and orders the viewer could already read."""
        return self._batch(lambda conn, keys: q.addresses_by_ids(conn, ids=keys))

    @cached_property
    def order_by_id(self) -> DataLoader[int, OrderRecord | None]:
        viewer, everything = self.viewer_id, self.all_orders
        return self._batch(
            lambda conn, keys: q.orders_by_ids(
                conn, ids=keys, owner_id=viewer, all_orders=everything
            )
        )

    @cached_property
    def payment_by_id(self) -> DataLoader[int, PaymentRecord | None]:
        viewer, everything = self.viewer_id, self.all_orders
        return self._batch(
            lambda conn, keys: q.payments_by_ids(
                conn, ids=keys, owner_id=viewer, all_orders=everything
            )
        )

    @cached_property
    def lines_by_order_id(self) -> DataLoader[int, list[OrderLineRecord]]:
        return self._batch(lambda conn, keys: q.lines_by_order_ids(conn, order_ids=keys), [])

    @cached_property
    def payments_by_order_id(self) -> DataLoader[int, list[PaymentRecord]]:
        return self._batch(lambda conn, keys: q.payments_by_order_ids(conn, order_ids=keys), [])

    @cached_property
    def fulfillments_by_order_id(self) -> DataLoader[int, list[FulfillmentRecord]]:
        """Only for orders whose access was checked already."""
        return self._batch(
            lambda conn, keys: oa.fulfillments_by_order_ids(conn, order_ids=keys), []
        )

    @cached_property
    def fulfillment_lines_by_fulfillment_id(
        self,
    ) -> DataLoader[int, list[FulfillmentLineRecord]]:
        return self._batch(
            lambda conn, keys: oa.fulfillment_lines_by_fulfillment_ids(conn, fulfillment_ids=keys),
            [],
        )

    @cached_property
    def fulfillment_by_id(self) -> DataLoader[int, FulfillmentRecord | None]:
        """Fulfillments of orders the viewer may see (for `node`)."""
        viewer, everything = self.viewer_id, self.all_orders
        return self._batch(
            lambda conn, keys: oa.fulfillments_by_ids(
                conn, ids=keys, owner_id=viewer, all_orders=everything
            )
        )

    @cached_property
    def _orders_of_user(self) -> DataLoader[tuple[Hashable, int], list[Any]]:
        windows, db = self._order_windows, self.db

        async def batch(keys: list[tuple[Hashable, int]]) -> list[list[Any]]:
            groups: dict[Hashable, list[int]] = {}
            for args_key, user_id in keys:
                groups.setdefault(args_key, []).append(user_id)
            found: dict[tuple[Hashable, int], list[Any]] = {}
            async with db.read() as conn:
                for args_key, user_ids in groups.items():
                    window, embed_lines = windows[args_key]
                    rows = await q.orders_by_users(
                        conn, user_ids=user_ids, window=window, embed_lines=embed_lines
                    )
                    for user_id in user_ids:
                        found[(args_key, user_id)] = rows.get(user_id, [])
            return [found[key] for key in keys]

        return DataLoader(batch, max_batch_size=100)

    @cached_property
    def _order_count_of_user(self) -> DataLoader[int, int]:
        return self._batch(lambda conn, keys: q.order_counts_by_users(conn, user_ids=keys), 0)

    def prime_orders_of(
        self, user_id: int, window: Window, rows: list[Any], *, embed_lines: bool = False
    ) -> None:
        """What `orders_of` would read for these arguments (`q.orders_by_users`'s rows
        for `user_id`), read ahead of it."""
        args_key = (window.args, embed_lines)
        self._order_windows.setdefault(args_key, (window, embed_lines))
        self._orders_of_user.prime((args_key, user_id), rows)

    async def orders_of(
        self, user_id: int, window: Window, *, embed_lines: bool = False
    ) -> Page[OrderRecord]:
        """A page of the customer's orders; `embed_lines` (PostgreSQL) reads their lines in
        the same statement."""
        args_key = (window.args, embed_lines)
        self._order_windows.setdefault(args_key, (window, embed_lines))
        rows = await self._orders_of_user.load((args_key, user_id))
        if embed_lines:  # here, not in the batch: a batch referring to self is a cycle
            prime_embedded(self.lines_by_order_id, rows, "embedded_lines", OrderLineRecord)

        async def count() -> int:
            return await self._order_count_of_user.load(user_id)

        return q.order_page(window, rows, count)
