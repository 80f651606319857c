"""Catalog types and root fields: products, variants, categories, collections."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from models.catalog.queries import (
    CategoryRecord,
    CollectionRecord,
    ProductRecord,
    VariantRecord,
)
from models.money import Money as MoneyValue
from models.money import money
from models.pagination import Page
from resolvers import catalog as r
from resolvers.context import Context
from schema.fields import computed, global_id, loaded, records_of
from schema.lookahead import nested_fields, selected_fields
from schema.relay import Connection, Node

Ctx = Info[Context, None]


@strawberry.enum
class SortDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.enum
class ProductSortField(Enum):
    NAME = "NAME"
    PRICE = "PRICE"
    CREATED_AT = "CREATED_AT"
    RELEVANCE = "RELEVANCE"


@strawberry.input(description="Products matching every given condition.")
class ProductFilter:
    category_id: strawberry.ID | None = strawberry.field(
        default=None, description="Includes products of all descendant categories."
    )
    collection_id: strawberry.ID | None = None
    price_gte: Decimal | None = strawberry.field(
        default=None, description="Some variant is priced at or above this."
    )
    price_lte: Decimal | None = strawberry.field(
        default=None,
        description="Some variant (the same one, with priceGte) is priced at or below this.",
    )
    in_stock: bool | None = None
    ids: list[strawberry.ID] | None = None


@strawberry.input(
    description="Default order: RELEVANCE DESC with `search`, otherwise CREATED_AT DESC; "
    "ties broken by id."
)
class ProductSortBy:
    field: ProductSortField
    direction: SortDirection


@strawberry.type
class Money:
    amount: Decimal
    currency: str


@strawberry.type
class PriceRange:
    start: Money
    stop: Money


@strawberry.type
class ProductImage:
    url: str
    alt: str


def _price_range(root: strawberry.Parent[ProductRecord]) -> PriceRange:
    return PriceRange(
        start=money(root.price_min, root.currency),  # type: ignore[arg-type]
        stop=money(root.price_max, root.currency),  # type: ignore[arg-type]
    )


@strawberry.type
class Product(Node):
    id: strawberry.ID = global_id("Product")
    name: str
    slug: str
    description: str
    is_published: bool
    category: Annotated[Category, strawberry.lazy("schema.catalog")] | None = loaded(
        lambda c: c.catalog.category_by_id,
        "category_id",
        Annotated["Category", strawberry.lazy("schema.catalog")] | None,
    )
    collections: list[Collection] = loaded(
        lambda c: c.catalog.collections_by_product_id,
        "id",
        list[Annotated["Collection", strawberry.lazy("schema.catalog")]],
    )
    variants: list[ProductVariant] = loaded(
        lambda c: c.catalog.variants_by_product_id,
        "id",
        list[Annotated["ProductVariant", strawberry.lazy("schema.catalog")]],
    )
    images: list[ProductImage] = loaded(
        lambda c: c.catalog.images_by_product_id, "id", list[ProductImage]
    )
    price_range: PriceRange = strawberry.field(
        resolver=_price_range, description="Over the product's variants."
    )
    is_available: bool = strawberry.field(description="Some variant has quantityAvailable > 0.")
    created_at: datetime
    updated_at: datetime

    is_type_of = records_of(ProductRecord)


def _variant_price(root: strawberry.Parent[VariantRecord]) -> MoneyValue:
    return money(root.price_amount, root.currency)


def _variant_quantity(root: strawberry.Parent[VariantRecord]) -> int:
    return root.quantity


@strawberry.type
class ProductVariant(Node):
    id: strawberry.ID = global_id("ProductVariant")
    sku: str
    name: str
    price: Money = computed(_variant_price, Money)
    quantity_available: int = strawberry.field(resolver=_variant_quantity)
    product: Product = loaded(lambda c: c.catalog.any_product_by_id, "product_id", Product)

    is_type_of = records_of(VariantRecord)


ProductConnection = Connection[Product]


@strawberry.type
class Category(Node):
    id: strawberry.ID = global_id("Category")
    name: str
    slug: str
    description: str
    level: int
    parent: Category | None = loaded(
        lambda c: c.catalog.category_by_id,
        "parent_id",
        Annotated["Category", strawberry.lazy("schema.catalog")] | None,
    )

    @strawberry.field(description="Child categories, by name.")
    async def children(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Category]:
        root: CategoryRecord = self  # type: ignore[assignment]
        page = await r.category_children(
            info.context, root.id, args=r.page_args(first, after, last, before)
        )
        return page  # type: ignore[return-value]

    @strawberry.field(description="Products of this category and all its descendants.")
    async def products(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: ProductFilter | None = None,
        sort_by: ProductSortBy | None = None,
    ) -> Connection[Product]:
        root: CategoryRecord = self  # type: ignore[assignment]
        page = await r.category_products(
            info.context,
            root.id,
            args=r.page_args(first, after, last, before),
            filter=filter,
            sort=sort_by,
            selected=selected_fields(info, connection=True),
        )
        return page  # type: ignore[return-value]

    is_type_of = records_of(CategoryRecord)


@strawberry.type
class Collection(Node):
    id: strawberry.ID = global_id("Collection")
    name: str
    slug: str
    description: str

    @strawberry.field
    async def products(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        sort_by: ProductSortBy | None = None,
    ) -> Connection[Product]:
        root: CollectionRecord = self  # type: ignore[assignment]
        page = await r.collection_products(
            info.context,
            root.id,
            args=r.page_args(first, after, last, before),
            sort=sort_by,
            selected=selected_fields(info, connection=True),
        )
        return page  # type: ignore[return-value]

    is_type_of = records_of(CollectionRecord)


_CATEGORY_PAGES = frozenset({"children", "products"})


def _page(page: Page[Any]) -> Any:
    return page


@strawberry.type
class CatalogQuery:
    @strawberry.field(description="A product by ID or slug; null when it is not visible.")
    async def product(
        self, info: Ctx, id: strawberry.ID | None = None, slug: str | None = None
    ) -> Product | None:
        return await r.product(  # type: ignore[return-value]
            info.context, id=id, slug=slug, selected=selected_fields(info)
        )

    @strawberry.field
    async def products(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: ProductFilter | None = None,
        sort_by: ProductSortBy | None = None,
        search: str | None = None,
    ) -> Connection[Product]:
        return _page(
            await r.products(
                info.context,
                args=r.page_args(first, after, last, before),
                filter=filter,
                sort=sort_by,
                search=search,
                selected=selected_fields(info, connection=True),
            )
        )

    @strawberry.field
    async def variant(
        self, info: Ctx, id: strawberry.ID | None = None, sku: str | None = None
    ) -> ProductVariant | None:
        return await r.variant(info.context, id=id, sku=sku)  # type: ignore[return-value]

    @strawberry.field
    async def category(
        self, info: Ctx, id: strawberry.ID | None = None, slug: str | None = None
    ) -> Category | None:
        # The nested pages a category's own statement can read (PostgreSQL only)
        embeds = info.context.db.dialect == "postgresql"
        nested = nested_fields(info, _CATEGORY_PAGES) if embeds else {}
        return await r.category(  # type: ignore[return-value]
            info.context,
            id=id,
            slug=slug,
            children=nested.get("children"),
            products=nested.get("products"),
        )

    @strawberry.field
    async def categories(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        level: int | None = None,
    ) -> Connection[Category]:
        return _page(
            await r.categories(
                info.context, args=r.page_args(first, after, last, before), level=level
            )
        )

    @strawberry.field
    async def collection(
        self, info: Ctx, id: strawberry.ID | None = None, slug: str | None = None
    ) -> Collection | None:
        return await r.collection(info.context, id=id, slug=slug)  # type: ignore[return-value]

    @strawberry.field
    async def collections(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Collection]:
        return _page(
            await r.collections(info.context, args=r.page_args(first, after, last, before))
        )
