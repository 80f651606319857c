"""Catalog resolvers: validate arguments, call the data layer, return records and pages."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol, cast

from models.catalog import queries as q
from models.catalog.queries import (
    CategoryRecord,
    CollectionRecord,
    ProductFilter,
    ProductQuery,
    ProductRecord,
    ProductSort,
    VariantRecord,
)
from models.errors import InvalidInput
from models.pagination import Page, PageArgs, Window
from resolvers import ids
from resolvers.context import Context

MAX_FILTER_IDS = 100
MAX_SLUG_LENGTH = 255


class ProductFilterInput(Protocol):
    @property
    def category_id(self) -> str | None: ...
    @property
    def collection_id(self) -> str | None: ...
    @property
    def price_gte(self) -> Decimal | None: ...
    @property
    def price_lte(self) -> Decimal | None: ...
    @property
    def in_stock(self) -> bool | None: ...
    @property
    def ids(self) -> Sequence[str] | None: ...


class SortInput(Protocol):
    @property
    def field(self) -> Any: ...  # an enum member; its name is the sort field
    @property
    def direction(self) -> Any: ...  # SortDirection member


def page_args(
    first: int | None, after: str | None, last: int | None, before: str | None
) -> PageArgs:
    return PageArgs(first=first, after=after, last=last, before=before)


def product_filter(value: ProductFilterInput | None) -> ProductFilter | None:
    if value is None:
        return None
    id_list: tuple[int, ...] | None = None
    if value.ids is not None:
        if len(value.ids) > MAX_FILTER_IDS:
            raise InvalidInput(
                f"`filter.ids` may hold at most {MAX_FILTER_IDS} IDs", field="filter.ids"
            )
        id_list = tuple(ids.decode(gid, "Product", field="filter.ids") for gid in value.ids)
    lower, upper = value.price_gte, value.price_lte
    if lower is not None and upper is not None and lower > upper:
        raise InvalidInput("`filter.priceGte` is above `filter.priceLte`", field="filter.priceGte")
    return ProductFilter(
        category_id=(
            ids.decode(value.category_id, "Category", field="filter.categoryId")
            if value.category_id is not None
            else None
        ),
        collection_id=(
            ids.decode(value.collection_id, "Collection", field="filter.collectionId")
            if value.collection_id is not None
            else None
        ),
        price_gte=lower,
        price_lte=upper,
        in_stock=value.in_stock,
        ids=id_list,
    )


def product_sort(value: SortInput | None) -> ProductSort | None:
    if value is None:
        return None
    return ProductSort(value.field.name, value.direction.name == "DESC")


def product_query(
    ctx: Context,
    *,
    args: PageArgs,
    filter: ProductFilterInput | None,
    sort: SortInput | None,
    search: str | None = None,
    selected: frozenset[str] = frozenset(),
) -> ProductQuery:
    """`selected`: the fields the query selects on each product (schema.lookahead)."""
    return ProductQuery(
        dialect=ctx.db.dialect,
        embed=q.embeddable(ctx.db.dialect, selected),
        args=args,
        filter=product_filter(filter),
        sort=product_sort(sort),
        search=search,
        published_only=ctx.catalog.published_only,
        currency=ctx.settings.currency,
    )


def _one_of(id: str | None, other: str | None, other_name: str) -> None:
    if (id is None) == (other is None):
        raise InvalidInput(f"pass exactly one of `id` and `{other_name}`", field="id")
    if other is not None and (len(other) > MAX_SLUG_LENGTH or "\x00" in other):
        raise InvalidInput(f"`{other_name}` is too long or not text", field=other_name)


async def products(
    ctx: Context,
    *,
    args: PageArgs,
    filter: ProductFilterInput | None,
    sort: SortInput | None,
    search: str | None,
    selected: frozenset[str] = frozenset(),
) -> Page[ProductRecord]:
    query = product_query(
        ctx, args=args, filter=filter, sort=sort, search=search, selected=selected
    )
    return await q.list_products(ctx.db, query=query, prime=ctx.catalog.prime)


async def product(
    ctx: Context, *, id: str | None, slug: str | None, selected: frozenset[str] = frozenset()
) -> ProductRecord | None:
    _one_of(id, slug, "slug")
    if id is not None:
        return await ctx.catalog.product_by_id.load(ids.decode(id, "Product"))
    assert slug is not None
    async with ctx.db.read() as conn:
        found = await q.product_by_slug(
            conn,
            slug=slug,
            published_only=ctx.catalog.published_only,
            embed=q.embeddable(ctx.db.dialect, selected),
            prime=ctx.catalog.prime,
        )
    if found is not None:
        ctx.catalog.product_by_id.prime(found.id, found)
    return found


async def variant(ctx: Context, *, id: str | None, sku: str | None) -> VariantRecord | None:
    _one_of(id, sku, "sku")
    if id is not None:
        return await ctx.catalog.variant_by_id.load(ids.decode(id, "ProductVariant"))
    assert sku is not None
    async with ctx.db.read() as conn:
        return await q.variant_by_sku(conn, sku=sku, published_only=ctx.catalog.published_only)


class NestedField(Protocol):
    """A field selected below the one being resolved (schema.lookahead.Nested)."""

    @property
    def arguments(self) -> dict[str, Any]: ...
    @property
    def selected(self) -> frozenset[str]: ...


_PAGE_ARGUMENTS = frozenset({"first", "after", "last", "before"})


def _nested_page(nested: NestedField | None) -> PageArgs | None:
    """The page arguments of a nested connection asked for with page arguments only (a
    null argument is one not given), else None (invalid ones too: the connection's own
    resolver reports them at its path)."""
    if nested is None:
        return None
    given = {name: value for name, value in nested.arguments.items() if value is not None}
    if not _PAGE_ARGUMENTS.issuperset(given):
        return None
    try:
        return PageArgs(**given)
    except InvalidInput:
        return None


async def category(
    ctx: Context,
    *,
    id: str | None,
    slug: str | None,
    children: NestedField | None = None,
    products: NestedField | None = None,
) -> CategoryRecord | None:
    """`children`, `products`: the category's connections the query selects, if known
    (schema.lookahead). On PostgreSQL, a category reads their pages in its own statement
    and hands them to the connections' loaders."""
    _one_of(id, slug, "slug")
    category_id = None if id is None else ids.decode(id, "Category")
    window = query = None
    if ctx.db.dialect == "postgresql":
        window, query = _category_pages(ctx, children, products)
    if window is None and query is None:
        if category_id is not None:
            return await ctx.catalog.category_by_id.load(category_id)
        async with ctx.db.read() as conn:
            return await q.category_by_slug(conn, slug=cast(str, slug))
    async with ctx.db.read() as conn:
        page = await q.category_with_pages(
            conn, id=category_id, slug=slug, children=window, products=query
        )
    if page is None:
        return None
    ctx.catalog.prime_category_page(page, window, query)
    ctx.catalog.category_by_id.prime(page.category.id, page.category)  # its children's parent
    return page.category


def _category_pages(
    ctx: Context, children: NestedField | None, products: NestedField | None
) -> tuple[Window | None, ProductQuery | None]:
    """What a category's statement can embed: the children's window and the products'
    query, each None when not selected or not valid (bad cursors included)."""
    window = query = None
    child_args = _nested_page(children)
    if child_args is not None:
        with contextlib.suppress(InvalidInput):
            window = q.category_window(child_args)
    product_args = _nested_page(products)
    if product_args is not None and products is not None:
        with contextlib.suppress(InvalidInput):
            query = product_query(
                ctx, args=product_args, filter=None, sort=None, selected=products.selected
            )
    return window, query


async def categories(ctx: Context, *, args: PageArgs, level: int | None) -> Page[CategoryRecord]:
    if level is not None and not 0 <= level <= 100:
        raise InvalidInput("`level` must be between 0 and 100", field="level")
    return await q.list_categories(ctx.db, window=q.category_window(args), level=level)


async def collection(ctx: Context, *, id: str | None, slug: str | None) -> CollectionRecord | None:
    _one_of(id, slug, "slug")
    if id is not None:
        return await ctx.catalog.collection_by_id.load(ids.decode(id, "Collection"))
    assert slug is not None
    async with ctx.db.read() as conn:
        return await q.collection_by_slug(conn, slug=slug)


async def collections(ctx: Context, *, args: PageArgs) -> Page[CollectionRecord]:
    return await q.list_collections(ctx.db, window=q.collection_window(args))


async def category_products(
    ctx: Context,
    category_id: int,
    *,
    args: PageArgs,
    filter: ProductFilterInput | None,
    sort: SortInput | None,
    selected: frozenset[str] = frozenset(),
) -> Page[ProductRecord]:
    query = product_query(ctx, args=args, filter=filter, sort=sort, selected=selected)
    return await ctx.catalog.products_of("category", category_id, query)


async def collection_products(
    ctx: Context,
    collection_id: int,
    *,
    args: PageArgs,
    sort: SortInput | None,
    selected: frozenset[str] = frozenset(),
) -> Page[ProductRecord]:
    query = product_query(ctx, args=args, filter=None, sort=sort, selected=selected)
    return await ctx.catalog.products_of("collection", collection_id, query)


async def category_children(
    ctx: Context, category_id: int, *, args: PageArgs
) -> Page[CategoryRecord]:
    return await ctx.catalog.children_of(category_id, q.category_window(args))
