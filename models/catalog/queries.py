"""Catalog reads: products, variants, categories, collections. Keyword-only, caller's connection."""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.types import NullType

from models.catalog.tables import (
    categories,
    collection_products,
    collections,
    images,
    products,
    variants,
)
from models.db import BuiltStatements, Database
from models.errors import InvalidInput
from models.grouping import embedded_list, embedded_one, group_by
from models.money import to_minor_ceiling, to_minor_floor
from models.pagination import (
    Page,
    PageArgs,
    SortKey,
    Window,
    group_rows,
    per_parent,
    sql_int,
)
from models.reads import fetch_all, fetch_first, keys_in

# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class ProductRecord:
    id: int
    name: str
    slug: str
    description: str
    is_published: bool
    category_id: int | None
    price_min: int
    price_max: int
    currency: str
    created_at: datetime
    updated_at: datetime
    is_available: bool


@dataclass(slots=True)
class VariantRecord:
    id: int
    product_id: int
    sku: str
    name: str
    price_amount: int
    currency: str
    quantity: int


@dataclass(slots=True)
class ImageRecord:
    product_id: int
    url: str
    alt: str


@dataclass(slots=True)
class CategoryRecord:
    id: int
    parent_id: int | None
    name: str
    slug: str
    description: str
    level: int


@dataclass(slots=True)
class CollectionRecord:
    id: int
    name: str
    slug: str
    description: str


def _columns(record: type, table: sa.FromClause) -> list[ColumnElement[Any]]:
    return [table.c[f.name] for f in fields(record) if f.name in table.c]


# A correlated LIMIT 1 lookup per returned row. (An EXISTS here lets PostgreSQL plan a
# hashed subplan over every in-stock variant, 60 ms on 100,000 products.)
_available = sa.func.coalesce(
    sa.select(sa.true())
    .where(variants.c.product_id == products.c.id, variants.c.quantity > sql_int(0))
    .limit(sql_int(1))
    .scalar_subquery(),
    sa.false(),
).label("is_available")
PRODUCT_COLUMNS = [*_columns(ProductRecord, products), _available]
VARIANT_COLUMNS = _columns(VariantRecord, variants)
IMAGE_COLUMNS = _columns(ImageRecord, images)
CATEGORY_COLUMNS = _columns(CategoryRecord, categories)
COLLECTION_COLUMNS = _columns(CollectionRecord, collections)
_NP = len(PRODUCT_COLUMNS)
_NC = len(CATEGORY_COLUMNS)
_NL = len(COLLECTION_COLUMNS)


def _product(row: Any) -> ProductRecord:
    return ProductRecord(*row[:_NP])


def _category(row: Any) -> CategoryRecord:
    return CategoryRecord(*row[:_NC])


def _collection(row: Any) -> CollectionRecord:
    return CollectionRecord(*row[:_NL])


# --------------------------------------------------------------------------- embedded relations

# Relations of a product that a page of products can carry in its own statement on
# PostgreSQL, so that a listing asking for them runs one statement, not one more per
# relation: each is a correlated subquery answering JSON text (models.grouping,
# `embedded_list`) of the values the relation's batch reads (`VariantRecord(*values)`),
# in the order the batch reads them. `CatalogLoaders.prime` seeds the loaders with them.
Embed = frozenset[str]
EMBEDDABLE: Embed = frozenset({"variants", "images", "category"})


def _embedded_list(columns: list[ColumnElement[Any]], product_id: Any, *order: Any) -> Select[Any]:
    return sa.select(embedded_list(columns, *order)).where(product_id == products.c.id)


_EMBEDDED: dict[str, ColumnElement[Any]] = {
    "category": (
        sa.select(embedded_one(CATEGORY_COLUMNS))
        .where(categories.c.id == products.c.category_id)
        .correlate(products)
        .scalar_subquery()
        .label("embedded_category")
    ),
    "images": _embedded_list(IMAGE_COLUMNS, images.c.product_id, images.c.position)
    .scalar_subquery()
    .label("embedded_images"),
    "variants": _embedded_list(VARIANT_COLUMNS, variants.c.product_id, variants.c.id)
    .scalar_subquery()
    .label("embedded_variants"),
}


def embeddable(dialect: str, selected: frozenset[str]) -> Embed:
    """The selected relations a product statement embeds on this dialect."""
    return EMBEDDABLE & selected if dialect == "postgresql" else frozenset()


def embedded_columns(embed: Embed) -> list[ColumnElement[Any]]:
    return [_EMBEDDED[name] for name in sorted(embed)]


# --------------------------------------------------------------------------- sorting

ProductSortField = Literal["NAME", "PRICE", "CREATED_AT", "RELEVANCE"]


@dataclass(frozen=True, slots=True)
class ProductSort:
    field: ProductSortField
    descending: bool


@dataclass(frozen=True, slots=True)
class ProductFilter:
    category_id: int | None = None
    collection_id: int | None = None
    price_gte: Decimal | None = None
    price_lte: Decimal | None = None
    in_stock: bool | None = None
    ids: tuple[int, ...] | None = None


MAX_SEARCH_LENGTH = 256
MAX_SEARCH_TERMS = 16
_TERM = re.compile(r"\w+", re.UNICODE)


def search_terms(text: str) -> list[str]:
    """Words of a search string; every operator character of FTS5 / tsquery is dropped."""
    if len(text) > MAX_SEARCH_LENGTH:
        raise InvalidInput(
            f"`search` may be at most {MAX_SEARCH_LENGTH} characters", field="search"
        )
    return [term.lower() for term in _TERM.findall(text)][:MAX_SEARCH_TERMS]


@dataclass(frozen=True, slots=True)
class _Search:
    """A full-text match: the join/filter to apply and the relevance expression."""

    apply: Callable[[Select[Any]], Select[Any]]
    relevance: ColumnElement[float]


def _sqlite_search(terms: list[str]) -> _Search:
    # Each term quoted (it holds only word characters); the last one matches as a prefix.
    query = " ".join(f'"{t}"' for t in terms[:-1]) + f' "{terms[-1]}"*'
    fts = sa.table("product_search", sa.column("rowid"))
    match = sa.literal_column("product_search").op("MATCH")(sa.literal(query.strip()))

    def apply(stmt: Select[Any]) -> Select[Any]:
        return stmt.join(fts, fts.c.rowid == products.c.id).where(match)

    relevance = sa.literal_column("(-bm25(product_search, 10.0, 1.0))", sa.Float())
    return _Search(apply, relevance)


def _postgres_search(terms: list[str]) -> _Search:
    query_text = " & ".join(f"'{t}'" for t in terms[:-1]) + (" & " if len(terms) > 1 else "")
    query_text += f"'{terms[-1]}':*"
    tsquery = sa.func.to_tsquery(
        sa.literal_column("'english'::regconfig"), sa.cast(sa.literal(query_text), sa.Text)
    )
    vector: ColumnElement[Any] = sa.literal_column("products.search_vector")

    def apply(stmt: Select[Any]) -> Select[Any]:
        return stmt.where(vector.op("@@")(tsquery))

    relevance = sa.cast(sa.func.ts_rank(vector, tsquery), sa.Float())
    return _Search(apply, relevance)


_BUILT = BuiltStatements()  # listings and per-parent pages, per distinct query


class ProductQuery:
    """Validated arguments of one product listing, reusable for many parents."""

    def __init__(
        self,
        *,
        dialect: str,
        args: PageArgs,
        filter: ProductFilter | None,
        sort: ProductSort | None,
        search: str | None,
        published_only: bool,
        currency: str,
        embed: Embed = frozenset(),
    ) -> None:
        self.filter = filter or ProductFilter()
        self.dialect = dialect
        # The relations each product row carries (see `embeddable`)
        self.embed = embed
        self.published_only = published_only
        self.currency = currency
        self.search: _Search | None = None
        self.no_results = False
        if search is not None and len(search) > MAX_SEARCH_LENGTH:
            search_terms(search)  # raises the length error, blank or not
        if search is not None and search.strip():
            terms = search_terms(search)
            if terms:
                make = _sqlite_search if dialect == "sqlite" else _postgres_search
                # Built once per distinct search: SQLAlchemy's table and column objects
                # hold reference cycles, left to the garbage collector when built per request
                self.search = _BUILT.get(("search", dialect, tuple(terms)), lambda: make(terms))
            else:
                self.no_results = True
        if sort is None:
            sort = ProductSort("RELEVANCE" if search is not None else "CREATED_AT", True)
        if sort.field == "RELEVANCE" and search is None:
            raise InvalidInput("sorting by RELEVANCE needs a `search` string", field="sortBy")
        expr: ColumnElement[Any]
        kind: Any
        if sort.field == "RELEVANCE":
            expr = self.search.relevance if self.search is not None else sa.literal(0.0)
            kind = "float"
        else:
            expr, kind = {
                "NAME": (products.c.name, "str"),
                "PRICE": (products.c.price_min, "int"),
                "CREATED_AT": (products.c.created_at, "datetime"),
            }[sort.field]
        key = SortKey(sort.field, expr, products.c.id, sort.descending, kind)
        self.window = Window.of(key, args)
        # Equal keys mean equal pages: nested loaders group parents by it.
        self.key = (args, self.filter, sort, search, published_only, embed)

    def statements(self) -> tuple[Select[Any], Select[Any]]:
        """(base, page): the filtered products and this query's page of them.

        Built once per distinct query (the storefront asks for the same few listings
        over and over) and kept in a small bounded cache: building them costs more than
        running SQLAlchemy's cached compilation of them.
        """

        def build() -> tuple[Select[Any], Select[Any]]:
            base = self.base()
            return base, self.window.apply(base.add_columns(*embedded_columns(self.embed)))

        return _BUILT.get(("listing", self.key, self.dialect, self.currency), build)

    def base(self) -> Select[Any]:
        stmt = sa.select(*PRODUCT_COLUMNS).select_from(products)
        if self.search is not None:
            stmt = self.search.apply(stmt)
        return stmt.where(*self._conditions())

    def _conditions(self) -> list[ColumnElement[bool]]:
        f = self.filter
        conds: list[ColumnElement[bool]] = []
        if self.published_only:
            conds.append(products.c.is_published.is_(True))
        if f.ids is not None:
            conds.append(products.c.id.in_(f.ids))
        if f.category_id is not None:
            tree = subtree([f.category_id])
            conds.append(products.c.category_id.in_(sa.select(tree.c.id)))
        if f.collection_id is not None:
            conds.append(
                sa.exists().where(
                    collection_products.c.product_id == products.c.id,
                    collection_products.c.collection_id == f.collection_id,
                )
            )
        if f.price_gte is not None or f.price_lte is not None:
            priced = [variants.c.product_id == products.c.id]
            if f.price_gte is not None:
                priced.append(
                    variants.c.price_amount >= to_minor_ceiling(f.price_gte, self.currency)
                )
            if f.price_lte is not None:
                priced.append(variants.c.price_amount <= to_minor_floor(f.price_lte, self.currency))
            conds.append(sa.exists().where(*priced))
        if f.in_stock is not None:
            stocked = sa.exists().where(
                variants.c.product_id == products.c.id, variants.c.quantity > 0
            )
            conds.append(stocked if f.in_stock else ~stocked)
        return conds


def subtree(roots: Sequence[int]) -> Any:
    """Recursive CTE (root_id, id): every category at or below each root."""
    return _subtree(categories.c.id.in_(roots), "tree")


def _subtree(roots: ColumnElement[bool], name: str) -> Any:
    """Recursive CTE (root_id, id): every category at or below each category `roots` finds."""
    tree = (
        sa.select(categories.c.id.label("root_id"), categories.c.id.label("id"))
        .where(roots)
        .cte(name, recursive=True)
    )
    return tree.union_all(
        sa.select(tree.c.root_id, categories.c.id).join(
            categories, categories.c.parent_id == tree.c.id
        )
    )


async def _count(db: Database, stmt: Select[Any]) -> int:
    async with db.read() as conn:
        total = await conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
        return int(total.scalar_one())


def _empty_page(query: ProductQuery) -> Page[ProductRecord]:
    async def zero() -> int:
        return 0

    return query.window.page([], _product, zero)


Prime = Callable[[Embed, Sequence[Any]], None]


async def list_products(
    db: Database, *, query: ProductQuery, prime: Prime | None = None
) -> Page[ProductRecord]:
    """One page of products; its totalCount query runs only if asked for. `prime` gets
    the rows when they embed relations (`query.embed`)."""
    if query.no_results:
        return _empty_page(query)
    base, page = query.statements()
    async with db.read() as conn:
        rows = await fetch_all(conn, page)
    if query.embed and prime is not None:
        prime(query.embed, rows)

    async def count() -> int:
        return await _count(db, base)

    return query.window.page(rows, _product, count)


# Products of many parents (a category and its descendants, or a collection) at once.


def _category_base(query: ProductQuery, tree: Any, embed: Embed) -> Callable[[int], Select[Any]]:
    def base_for(category_id: int) -> Select[Any]:
        return (
            query.base()
            .add_columns(*embedded_columns(embed))
            .where(
                products.c.category_id.in_(
                    sa.select(tree.c.id).where(tree.c.root_id == category_id)
                )
            )
        )

    return base_for


def _collection_base(query: ProductQuery, embed: Embed) -> Callable[[int], Select[Any]]:
    def base_for(collection_id: int) -> Select[Any]:
        return (
            query.base()
            .add_columns(*embedded_columns(embed))
            .where(
                sa.exists().where(
                    collection_products.c.product_id == products.c.id,
                    collection_products.c.collection_id == collection_id,
                )
            )
        )

    return base_for


async def products_by_parent(
    conn: AsyncConnection,
    *,
    parent: Literal["category", "collection"],
    parent_ids: Sequence[int],
    query: ProductQuery,
) -> dict[int, list[Any]]:
    """Rows of one page per parent (pass them to `query.window.page`)."""
    if query.no_results or not parent_ids:
        return {}

    def build() -> Select[Any]:
        base_for = (
            _category_base(query, subtree(parent_ids), query.embed)
            if parent == "category"
            else _collection_base(query, query.embed)
        )
        return per_parent(query.window, parent_ids, base_for)

    key = ("per_parent", parent, tuple(parent_ids), query.key, query.dialect, query.currency)
    rows = await fetch_all(conn, _BUILT.get(key, build))
    return group_rows(query.window, rows)


async def product_counts_by_parent(
    conn: AsyncConnection,
    *,
    parent: Literal["category", "collection"],
    parent_ids: Sequence[int],
    query: ProductQuery,
) -> dict[int, int]:
    if query.no_results or not parent_ids:
        return {}
    base_for = (
        _category_base(query, subtree(parent_ids), frozenset())
        if parent == "category"
        else _collection_base(query, frozenset())
    )
    branches = [
        sa.select(sa.literal(pid).label("parent"), sa.func.count().label("n")).select_from(
            base_for(pid).subquery()
        )
        for pid in parent_ids
    ]
    stmt = branches[0] if len(branches) == 1 else sa.union_all(*branches)
    return {row.parent: row.n for row in (await conn.execute(stmt)).all()}


def product_page(query: ProductQuery, rows: list[Any], count: Any) -> Page[ProductRecord]:
    return query.window.page(rows, _product, count)


# --------------------------------------------------------------------------- categories


def category_window(args: PageArgs) -> Window:
    key = SortKey("cname", categories.c.name, categories.c.id, False, "str")
    return Window.of(key, args)


async def list_categories(
    db: Database, *, window: Window, level: int | None
) -> Page[CategoryRecord]:
    base = sa.select(*CATEGORY_COLUMNS)
    if level is not None:
        base = base.where(categories.c.level == level)
    async with db.read() as conn:
        rows = (await conn.execute(window.apply(base))).all()

    async def count() -> int:
        return await _count(db, base)

    return window.page(rows, _category, count)


async def children_by_parent(
    conn: AsyncConnection, *, parent_ids: Sequence[int], window: Window
) -> dict[int, list[Any]]:
    def base_for(parent_id: int) -> Select[Any]:
        return sa.select(*CATEGORY_COLUMNS).where(categories.c.parent_id == parent_id)

    def build() -> Select[Any]:
        return per_parent(window, parent_ids, base_for)

    stmt = _BUILT.get(("children", tuple(parent_ids), window), build)
    rows = await fetch_all(conn, stmt)
    return group_rows(window, rows)


async def child_counts(conn: AsyncConnection, *, parent_ids: Sequence[int]) -> dict[int, int]:
    stmt = (
        sa.select(categories.c.parent_id, sa.func.count())
        .where(categories.c.parent_id.in_(parent_ids))
        .group_by(categories.c.parent_id)
    )
    return {row[0]: row[1] for row in (await conn.execute(stmt)).all()}


def category_page(window: Window, rows: list[Any], count: Any) -> Page[CategoryRecord]:
    return window.page(rows, _category, count)


# --------------------------------------------------------------------------- collections


def collection_window(args: PageArgs) -> Window:
    key = SortKey("lname", collections.c.name, collections.c.id, False, "str")
    return Window.of(key, args)


async def list_collections(db: Database, *, window: Window) -> Page[CollectionRecord]:
    base = sa.select(*COLLECTION_COLUMNS)
    async with db.read() as conn:
        rows = (await conn.execute(window.apply(base))).all()

    async def count() -> int:
        return await _count(db, base)

    return window.page(rows, _collection, count)


# --------------------------------------------------------------------------- by key


# The statements loaders and lookups run on every request are built once, with their
# values as bound parameters: building a Select and deriving its cache key each time cost
# more than SQLAlchemy's compiled-statement cache saves (about 0.15 ms per statement).
_PUBLISHED = products.c.is_published.is_(True)
_PRODUCTS_BY_IDS = sa.select(*PRODUCT_COLUMNS).where(keys_in(products.c.id))
_PUBLISHED_PRODUCTS_BY_IDS = _PRODUCTS_BY_IDS.where(_PUBLISHED)
_PRODUCT_BY_SLUG = sa.select(*PRODUCT_COLUMNS).where(products.c.slug == sa.bindparam("slug"))
_PUBLISHED_PRODUCT_BY_SLUG = _PRODUCT_BY_SLUG.where(_PUBLISHED)


async def products_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int], published_only: bool
) -> dict[int, ProductRecord]:
    stmt = _PUBLISHED_PRODUCTS_BY_IDS if published_only else _PRODUCTS_BY_IDS
    rows = await fetch_all(conn, stmt, {"ids": list(ids)})
    return {row.id: _product(row) for row in rows}


_BY_SLUG: dict[tuple[bool, Embed], Select[Any]] = {}  # at most 2 x 8 statements


def _by_slug(published_only: bool, embed: Embed) -> Select[Any]:
    stmt = _BY_SLUG.get((published_only, embed))
    if stmt is None:
        base = _PUBLISHED_PRODUCT_BY_SLUG if published_only else _PRODUCT_BY_SLUG
        stmt = _BY_SLUG[published_only, embed] = base.add_columns(*embedded_columns(embed))
    return stmt


async def product_by_slug(
    conn: AsyncConnection,
    *,
    slug: str,
    published_only: bool,
    embed: Embed = frozenset(),
    prime: Prime | None = None,
) -> ProductRecord | None:
    """The product with this slug; `prime` gets its row when it embeds relations."""
    row = await fetch_first(conn, _by_slug(published_only, embed), {"slug": slug})
    if row is None:
        return None
    if embed and prime is not None:
        prime(embed, [row])
    return _product(row)


def _visible_variants(published_only: bool) -> Select[Any]:
    stmt = sa.select(*VARIANT_COLUMNS)
    if published_only:
        stmt = stmt.join(products, products.c.id == variants.c.product_id).where(
            products.c.is_published.is_(True)
        )
    return stmt


async def variants_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int], published_only: bool
) -> dict[int, VariantRecord]:
    stmt = _visible_variants(published_only).where(variants.c.id.in_(ids))
    return {row.id: VariantRecord(*row) for row in (await conn.execute(stmt)).all()}


async def variant_by_sku(
    conn: AsyncConnection, *, sku: str, published_only: bool
) -> VariantRecord | None:
    row = (
        await conn.execute(_visible_variants(published_only).where(variants.c.sku == sku))
    ).first()
    return VariantRecord(*row) if row is not None else None


_VARIANTS_BY_PRODUCT_IDS = (
    sa.select(*VARIANT_COLUMNS)
    .where(keys_in(variants.c.product_id))
    .order_by(variants.c.product_id, variants.c.id)
)
_IMAGES_BY_PRODUCT_IDS = (
    sa.select(*IMAGE_COLUMNS)
    .where(keys_in(images.c.product_id))
    .order_by(images.c.product_id, images.c.position)
)


async def variants_by_product_ids(
    conn: AsyncConnection, *, product_ids: Sequence[int]
) -> dict[int, list[VariantRecord]]:
    ids = {"ids": list(product_ids)}
    return group_by(
        await fetch_all(conn, _VARIANTS_BY_PRODUCT_IDS, ids, into=VariantRecord), "product_id"
    )


async def images_by_product_ids(
    conn: AsyncConnection, *, product_ids: Sequence[int]
) -> dict[int, list[ImageRecord]]:
    ids = {"ids": list(product_ids)}
    return group_by(
        await fetch_all(conn, _IMAGES_BY_PRODUCT_IDS, ids, into=ImageRecord), "product_id"
    )


async def collections_by_product_ids(
    conn: AsyncConnection, *, product_ids: Sequence[int]
) -> dict[int, list[CollectionRecord]]:
    stmt = (
        sa.select(collection_products.c.product_id, *COLLECTION_COLUMNS)
        .join(collections, collections.c.id == collection_products.c.collection_id)
        .where(collection_products.c.product_id.in_(product_ids))
        .order_by(collection_products.c.product_id, collections.c.name, collections.c.id)
    )
    grouped: dict[int, list[CollectionRecord]] = {}
    for row in (await conn.execute(stmt)).all():
        grouped.setdefault(row[0], []).append(CollectionRecord(*row[1:]))
    return grouped


_CATEGORIES_BY_IDS = sa.select(*CATEGORY_COLUMNS).where(keys_in(categories.c.id))
_CATEGORY_BY_SLUG = sa.select(*CATEGORY_COLUMNS).where(categories.c.slug == sa.bindparam("slug"))


async def categories_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int]
) -> dict[int, CategoryRecord]:
    rows = await fetch_all(conn, _CATEGORIES_BY_IDS, {"ids": list(ids)})
    return {row.id: _category(row) for row in rows}


async def category_by_slug(conn: AsyncConnection, *, slug: str) -> CategoryRecord | None:
    row = await fetch_first(conn, _CATEGORY_BY_SLUG, {"slug": slug})
    return _category(row) if row is not None else None


# --------------------------------------------------------------------------- category pages

# A category page (the category by slug, a page of its children, a page of its products)
# as one statement on PostgreSQL: each page is an array of anonymous records in a column
# of the category's row, in the page's order, as its batch would read them. The products
# come from a recursive CTE rooted at the same slug. Three statements in two rounds (the
# category, then its children and products) become one.
_PAGE_CATEGORY = categories.alias("page_category")


@dataclass(frozen=True, slots=True)
class CategoryPage:
    """What `category_with_pages` read: the category and the rows of each page it
    embedded (None for a page it was not asked for)."""

    category: CategoryRecord
    children: list[Any] | None
    products: list[Any] | None


def _page_array(window: Window, page: Select[Any], label: str) -> tuple[Any, Any]:
    """(the page as one array column, a row type naming the page's columns)."""
    rows = page.subquery()
    order = (rows.c.page_key, rows.c.id)
    ordering = [c.desc() for c in order] if window.query_descending else list(order)
    array = (
        sa.select(
            sa.func.array_agg(aggregate_order_by(sa.tuple_(*rows.c), *ordering), type_=NullType())
        )
        .scalar_subquery()
        .label(label)
    )
    return array, namedtuple(f"{label}_row", list(rows.c.keys()))


def _category_page_statement(
    by: str, children: Window | None, query: ProductQuery | None
) -> tuple[Select[Any], Any, Any]:
    outer = _PAGE_CATEGORY
    columns: list[Any] = _columns(CategoryRecord, outer)
    child_row = product_row = None
    if children is not None:
        page = children.apply(
            sa.select(*CATEGORY_COLUMNS)
            .where(categories.c.parent_id == outer.c.id)
            .correlate(outer)
        )
        array, child_row = _page_array(children, page, "embedded_children")
        columns.append(array)
    if query is not None:
        tree = _subtree(categories.c[by] == sa.bindparam("key"), "page_tree")
        base = query.base().add_columns(*embedded_columns(query.embed))
        page = query.window.apply(base.where(products.c.category_id.in_(sa.select(tree.c.id))))
        array, product_row = _page_array(query.window, page, "embedded_products")
        columns.append(array)
    stmt = sa.select(*columns).where(outer.c[by] == sa.bindparam("key"))
    return stmt, child_row, product_row


async def category_with_pages(
    conn: AsyncConnection,
    *,
    id: int | None = None,
    slug: str | None = None,
    children: Window | None,
    products: ProductQuery | None,
) -> CategoryPage | None:
    """The category with the given id or slug, its children's page in `children` and its
    products' page (descendants included) of `products`, in one statement (PostgreSQL).
    A product query with no possible results is not embedded."""
    by, value = ("id", id) if id is not None else ("slug", slug)
    query = None if products is None or products.no_results else products
    key = (
        "category_page",
        by,
        None if children is None else children.args,
        None if query is None else (query.key, query.dialect, query.currency),
    )
    stmt, child_row, product_row = _BUILT.get(
        key, lambda: _category_page_statement(by, children, query)
    )
    row = await fetch_first(conn, stmt, {"key": value})
    if row is None:
        return None
    child_rows = product_rows = None
    if child_row is not None:
        child_rows = [child_row(*values) for values in row.embedded_children or ()]
    if product_row is not None:
        product_rows = [product_row(*values) for values in row.embedded_products or ()]
    return CategoryPage(_category(row), child_rows, product_rows)


async def collections_by_ids(
    conn: AsyncConnection, *, ids: Sequence[int]
) -> dict[int, CollectionRecord]:
    stmt = sa.select(*COLLECTION_COLUMNS).where(collections.c.id.in_(ids))
    return {row.id: _collection(row) for row in (await conn.execute(stmt)).all()}


async def collection_by_slug(conn: AsyncConnection, *, slug: str) -> CollectionRecord | None:
    row = (
        await conn.execute(sa.select(*COLLECTION_COLUMNS).where(collections.c.slug == slug))
    ).first()
    return _collection(row) if row is not None else None


# --------------------------------------------------------------------------- writes


async def refresh_product_prices(conn: AsyncConnection, *, product_ids: Sequence[int]) -> None:
    """Recompute the denormalised price range of products after their variants changed."""
    low = (
        sa.select(sa.func.coalesce(sa.func.min(variants.c.price_amount), 0))
        .where(variants.c.product_id == products.c.id)
        .scalar_subquery()
    )
    high = (
        sa.select(sa.func.coalesce(sa.func.max(variants.c.price_amount), 0))
        .where(variants.c.product_id == products.c.id)
        .scalar_subquery()
    )
    await conn.execute(
        products.update()
        .where(products.c.id.in_(product_ids))
        .values(price_min=low, price_max=high)
    )
