"""Per-request DataLoaders for every catalog relation: one SQL statement per batch.

Each batch opens its own connection, so batches that strawberry runs concurrently never
share one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Literal, TypeVar

import orjson

from models.catalog import queries as q
from models.catalog.queries import (
    CategoryRecord,
    CollectionRecord,
    ImageRecord,
    ProductQuery,
    ProductRecord,
    VariantRecord,
)
from models.dataloader import DataLoader, cached_property
from models.db import Database
from models.grouping import prime_embedded
from models.pagination import Page, Window

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

ParentKey = tuple[Hashable, int]


class CatalogLoaders:
    """Created per request; `published_only` is the viewer's product visibility."""

    def __init__(self, db: Database, *, published_only: bool) -> None:
        self.db = db
        self.published_only = published_only
        self._product_queries: dict[Hashable, ProductQuery] = {}
        self._child_windows: dict[Hashable, Window] = {}

    def _by_key(
        self,
        fetch: Callable[[Any, list[K]], Awaitable[dict[K, V]]],
        default: Any = None,
    ) -> DataLoader[K, Any]:
        db = self.db

        async def batch(keys: list[K]) -> list[Any]:
            async with db.read() as conn:
                found = await fetch(conn, keys)
            return [found.get(key, default) for key in keys]

        return DataLoader(batch)

    @cached_property
    def product_by_id(self) -> DataLoader[int, ProductRecord | None]:
        published_only = self.published_only
        return self._by_key(
            lambda conn, ids: q.products_by_ids(conn, ids=ids, published_only=published_only)
        )

    @cached_property
    def any_product_by_id(self) -> DataLoader[int, ProductRecord | None]:
        """Products whatever their visibility: for the product of a variant the viewer
        already holds (variant reads are filtered by product visibility; lines of the
        viewer's checkouts and orders keep theirs)."""
        return self._by_key(
            lambda conn, ids: q.products_by_ids(conn, ids=ids, published_only=False)
        )

    @cached_property
    def variant_by_id(self) -> DataLoader[int, VariantRecord | None]:
        published_only = self.published_only
        return self._by_key(
            lambda conn, ids: q.variants_by_ids(conn, ids=ids, published_only=published_only)
        )

    @cached_property
    def any_variant_by_id(self) -> DataLoader[int, VariantRecord | None]:
        """Variants whatever their product's visibility: for lines of checkouts and
        orders the viewer may already read."""
        return self._by_key(
            lambda conn, ids: q.variants_by_ids(conn, ids=ids, published_only=False)
        )

    @cached_property
    def variants_by_product_id(self) -> DataLoader[int, list[VariantRecord]]:
        return self._by_key(lambda conn, ids: q.variants_by_product_ids(conn, product_ids=ids), ())

    @cached_property
    def images_by_product_id(self) -> DataLoader[int, list[ImageRecord]]:
        return self._by_key(lambda conn, ids: q.images_by_product_ids(conn, product_ids=ids), ())

    @cached_property
    def collections_by_product_id(self) -> DataLoader[int, list[CollectionRecord]]:
        return self._by_key(
            lambda conn, ids: q.collections_by_product_ids(conn, product_ids=ids), ()
        )

    @cached_property
    def category_by_id(self) -> DataLoader[int, CategoryRecord | None]:
        return self._by_key(lambda conn, ids: q.categories_by_ids(conn, ids=ids))

    @cached_property
    def collection_by_id(self) -> DataLoader[int, CollectionRecord | None]:
        return self._by_key(lambda conn, ids: q.collections_by_ids(conn, ids=ids))

    def prime(self, embed: q.Embed, rows: Sequence[Any]) -> None:
        """Seed the relation loaders with the relations product rows embed
        (`q.embedded_columns`): what their batches would read, without the statements."""
        if "variants" in embed:
            prime_embedded(self.variants_by_product_id, rows, "embedded_variants", VariantRecord)
        if "images" in embed:
            prime_embedded(self.images_by_product_id, rows, "embedded_images", ImageRecord)
        if "category" in embed:
            category = self.category_by_id
            for row in rows:
                if row.category_id is not None:
                    found = row.embedded_category
                    category.prime(
                        row.category_id,
                        None if found is None else CategoryRecord(*orjson.loads(found)),
                    )

    # Nested connections: keys are (page-arguments key, parent id); all parents that share
    # the arguments are paged in one statement.

    def _grouped(
        self,
        run: Callable[[Any, Hashable, list[int]], Awaitable[dict[int, Any]]],
        default: Any,
    ) -> DataLoader[ParentKey, Any]:
        db = self.db

        async def batch(keys: list[ParentKey]) -> list[Any]:
            groups: dict[Hashable, list[int]] = {}
            for args_key, parent_id in keys:
                groups.setdefault(args_key, []).append(parent_id)
            results: dict[ParentKey, Any] = {}
            async with db.read() as conn:
                for args_key, parent_ids in groups.items():
                    found = await run(conn, args_key, parent_ids)
                    for parent_id in parent_ids:
                        results[(args_key, parent_id)] = found.get(parent_id, default)
            return [results[key] for key in keys]

        return DataLoader(batch, max_batch_size=100)

    def _product_rows(
        self, parent: Literal["category", "collection"]
    ) -> DataLoader[ParentKey, list[Any]]:
        queries = self._product_queries

        async def run(conn: Any, args_key: Hashable, parent_ids: list[int]) -> dict[int, Any]:
            return await q.products_by_parent(
                conn, parent=parent, parent_ids=parent_ids, query=queries[args_key]
            )

        return self._grouped(run, [])

    def _product_counts(
        self, parent: Literal["category", "collection"]
    ) -> DataLoader[ParentKey, int]:
        queries = self._product_queries

        async def run(conn: Any, args_key: Hashable, parent_ids: list[int]) -> dict[int, Any]:
            return await q.product_counts_by_parent(
                conn, parent=parent, parent_ids=parent_ids, query=queries[args_key]
            )

        return self._grouped(run, 0)

    @cached_property
    def _rows_by_category(self) -> DataLoader[ParentKey, list[Any]]:
        return self._product_rows("category")

    @cached_property
    def _rows_by_collection(self) -> DataLoader[ParentKey, list[Any]]:
        return self._product_rows("collection")

    @cached_property
    def _count_by_category(self) -> DataLoader[ParentKey, int]:
        return self._product_counts("category")

    @cached_property
    def _count_by_collection(self) -> DataLoader[ParentKey, int]:
        return self._product_counts("collection")

    async def products_of(
        self, parent: Literal["category", "collection"], parent_id: int, query: ProductQuery
    ) -> Page[ProductRecord]:
        """One page of a category's (descendants included) or a collection's products."""
        self._product_queries.setdefault(query.key, query)
        key = (query.key, parent_id)
        rows_loader, count_loader = (
            (self._rows_by_category, self._count_by_category)
            if parent == "category"
            else (self._rows_by_collection, self._count_by_collection)
        )
        rows = await rows_loader.load(key)
        if query.embed:  # here, not in the batch: a batch referring to self is a cycle
            self.prime(query.embed, rows)

        async def count() -> int:
            return await count_loader.load(key)

        return q.product_page(query, rows, count)

    def prime_category_page(
        self, page: q.CategoryPage, children: Window | None, products: ProductQuery | None
    ) -> None:
        """Seed the loaders of a category's nested pages with the rows its own statement
        embedded (`q.category_with_pages`): `children_of` and `products_of` with the
        same arguments then answer without a statement."""
        parent_id = page.category.id
        if children is not None and page.children is not None:
            self._child_windows.setdefault(children.args, children)
            self._children.prime((children.args, parent_id), page.children)
        if products is not None and page.products is not None:
            self._product_queries.setdefault(products.key, products)
            self._rows_by_category.prime((products.key, parent_id), page.products)

    @cached_property
    def _children(self) -> DataLoader[ParentKey, list[Any]]:
        windows = self._child_windows

        async def run(conn: Any, args_key: Hashable, parent_ids: list[int]) -> dict[int, Any]:
            return await q.children_by_parent(conn, parent_ids=parent_ids, window=windows[args_key])

        return self._grouped(run, [])

    @cached_property
    def _child_count(self) -> DataLoader[int, int]:
        return self._by_key(lambda conn, ids: q.child_counts(conn, parent_ids=ids), 0)

    async def children_of(self, parent_id: int, window: Window) -> Page[CategoryRecord]:
        self._child_windows.setdefault(window.args, window)
        rows = await self._children.load((window.args, parent_id))

        async def count() -> int:
            return await self._child_count.load(parent_id)

        return q.category_page(window, rows, count)
