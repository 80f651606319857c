"""Keyset pagination, property-based: walking `products` forward (first/after) or backward
(last/before) under every sort and filter yields exactly the rows a plain Python reference
gives, with no duplicates or gaps, also while products are inserted between pages."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from catalog_reference import Catalog, Product, amount, gid, load_catalog
from conftest import GraphQL, graphql_caller, make_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.catalog.queries import refresh_product_prices
from models.catalog.tables import products, variants
from models.db import Database

SORTS = ["NAME", "PRICE", "CREATED_AT"]
NAME_PARTS = ["Alpha", "alpha", "Zed", "Émile", "Linen", "Linen Shirt", "Öko", "mug"]
_serial = itertools.count(1)


@pytest.fixture
async def writable(fresh_db: Database) -> AsyncIterator[tuple[Database, GraphQL]]:
    async with make_client(fresh_db) as client:
        yield fresh_db, graphql_caller(client)


@dataclass(frozen=True)
class NewProduct:
    name: str
    price: int
    quantity: int
    published: bool
    created_offset_minutes: int
    category_index: int


new_products = st.builds(
    NewProduct,
    name=st.sampled_from(NAME_PARTS),
    price=st.sampled_from([499, 999, 1999, 2599, 4999, 10000]),
    quantity=st.sampled_from([0, 5]),
    published=st.booleans(),
    created_offset_minutes=st.integers(0, 365 * 24 * 60),
    category_index=st.integers(0, 200),
)


async def _insert(db: Database, ref: Catalog, new: NewProduct) -> int:
    n = next(_serial)
    category_ids = sorted(ref.categories)
    created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=new.created_offset_minutes)
    async with db.transaction() as conn:
        pid = (
            await conn.execute(
                products.insert()
                .values(
                    name=new.name,
                    slug=f"inserted-{n}-{id(new)}",
                    description="inserted while paginating",
                    is_published=new.published,
                    category_id=category_ids[new.category_index % len(category_ids)],
                    currency="USD",
                    created_at=created,
                    updated_at=created,
                )
                .returning(products.c.id)
            )
        ).scalar_one()
        await conn.execute(
            variants.insert().values(
                product_id=pid,
                sku=f"INS-{n}-{pid}",
                name="Default",
                price_amount=new.price,
                currency="USD",
                quantity=new.quantity,
                created_at=created,
                updated_at=created,
            )
        )
        await refresh_product_prices(conn, product_ids=[pid])
    return int(pid)


def _filters(ref: Catalog) -> list[tuple[dict[str, Any] | None, Any]]:
    level1 = sorted(c["id"] for c in ref.categories.values() if c["level"] == 1)[0]
    subtree = ref.subtree(level1)
    collection_id = min(ref.collections)
    return [
        (None, lambda p: True),
        ({"inStock": True}, lambda p: p.in_stock),
        ({"categoryId": gid("Category", level1)}, lambda p: p.category_id in subtree),
        ({"collectionId": gid("Collection", collection_id)},
         lambda p: collection_id in p.collection_ids),
        ({"priceGte": amount(1999), "priceLte": amount(20000)},
         lambda p: any(1999 <= v["price_amount"] <= 20000 for v in p.variants)),
    ]  # fmt: skip


QUERY = """query($first: Int, $after: String, $last: Int, $before: String,
                 $filter: ProductFilter, $sort: ProductSortBy) {
  products(first: $first, after: $after, last: $last, before: $before,
           filter: $filter, sortBy: $sort) {
    totalCount
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  } }"""


async def _walk(
    db: Database,
    gql: GraphQL,
    *,
    size: int,
    backward: bool,
    product_filter: dict[str, Any] | None,
    sort: dict[str, str],
    inserts: list[list[NewProduct]],
    ref: Catalog,
) -> tuple[list[int], list[tuple[int, Any]]]:
    """Walk every page; after page i insert inserts[i]. Returns the ids seen, in list order,
    and (new id, cursor position key at the time it was inserted) for each insert."""
    seen: list[list[int]] = []
    inserted: list[tuple[int, Any]] = []
    cursor: str | None = None
    for page_no in range(500):
        variables: dict[str, Any] = {"filter": product_filter, "sort": sort}
        variables.update(
            {"last": size, "before": cursor} if backward else {"first": size, "after": cursor}
        )
        page = (await gql(QUERY, variables))["data"]["products"]
        ids = [int(_key(e["node"]["id"])) for e in page["edges"]]
        info = page["pageInfo"]
        assert len(ids) <= size
        if page["edges"]:
            assert info["startCursor"] == page["edges"][0]["cursor"]
            assert info["endCursor"] == page["edges"][-1]["cursor"]
        seen.append(ids)
        more = info["hasPreviousPage"] if backward else info["hasNextPage"]
        if cursor is not None:
            assert info["hasNextPage" if backward else "hasPreviousPage"] is True
        if not more:
            break
        assert len(ids) == size, "a page that is not the last one is full"
        position = ids[0] if backward else ids[-1]
        cursor = info["startCursor"] if backward else info["endCursor"]
        for new in inserts[page_no] if page_no < len(inserts) else []:
            inserted.append((await _insert(db, ref, new), position))
    else:  # pragma: no cover - a runaway walk is a failure
        pytest.fail("pagination did not terminate")
    if backward:
        seen.reverse()
    return [i for page in seen for i in page], inserted


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sort_field=st.sampled_from(SORTS),
    descending=st.booleans(),
    size=st.integers(1, 40),
    backward=st.booleans(),
    filter_index=st.integers(0, 4),
    inserts=st.lists(st.lists(new_products, max_size=3), max_size=4),
)
async def test_walk_matches_reference(
    writable: tuple[Database, GraphQL],
    sort_field: str,
    descending: bool,
    size: int,
    backward: bool,
    filter_index: int,
    inserts: list[list[NewProduct]],
) -> None:
    db, gql = writable
    ref = await load_catalog(db)
    product_filter, matches = _filters(ref)[filter_index]
    sort = {"field": sort_field, "direction": "DESC" if descending else "ASC"}
    walked, inserted = await _walk(
        db,
        gql,
        size=size,
        backward=backward,
        product_filter=product_filter,
        sort=sort,
        inserts=inserts,
        ref=ref,
    )
    after = await load_catalog(db)
    assert len(walked) == len(set(walked)), "no product appears twice"

    def key(p: Product) -> Any:
        return p.sort_key(sort_field)

    original = [p for p in ref.visible() if matches(p)]
    expected_rows = list(original)
    for new_id, position_id in inserted:
        new = after.products[new_id]
        if not (new.is_published and matches(new)):
            continue
        here = key(after.products[position_id])
        # Forward walks still reach rows inserted after the cursor; backward, before it.
        ahead = (key(new) > here) != descending
        if ahead != backward:
            expected_rows.append(new)
    expected = [p.id for p in after.ordered(expected_rows, sort_field, descending)]
    assert walked == expected


async def test_first_and_last_pages_agree_and_total_count_is_exact(
    writable: tuple[Database, GraphQL],
) -> None:
    db, gql = writable
    ref = await load_catalog(db)
    visible = ref.ordered(ref.visible(), "NAME", False)
    sort = {"field": "NAME", "direction": "ASC"}
    head = (await gql(QUERY, {"first": 5, "sort": sort}))["data"]["products"]
    tail = (await gql(QUERY, {"last": 5, "sort": sort}))["data"]["products"]
    assert head["totalCount"] == tail["totalCount"] == len(visible)
    assert [int(_key(e["node"]["id"])) for e in head["edges"]] == [p.id for p in visible[:5]]
    assert [int(_key(e["node"]["id"])) for e in tail["edges"]] == [p.id for p in visible[-5:]]
    assert head["pageInfo"]["hasPreviousPage"] is False and head["pageInfo"]["hasNextPage"]
    assert tail["pageInfo"]["hasNextPage"] is False and tail["pageInfo"]["hasPreviousPage"]
    # `first: 0` is a valid, empty page that still says whether rows exist.
    empty = (await gql(QUERY, {"first": 0, "sort": sort}))["data"]["products"]
    assert empty["edges"] == [] and empty["pageInfo"]["hasNextPage"] is True
    # A cursor stays valid after its own row is deleted (keyset, not offset).
    cursor = head["edges"][2]["cursor"]
    async with db.transaction() as conn:
        await conn.execute(products.delete().where(products.c.id == visible[2].id))
    nxt = (await gql(QUERY, {"first": 2, "after": cursor, "sort": sort}))["data"]["products"]
    assert [int(_key(e["node"]["id"])) for e in nxt["edges"]] == [p.id for p in visible[3:5]]


def common_word(ref: Catalog) -> str:
    """A word (not a stop word) found in many product descriptions."""
    counts = Counter(
        w
        for p in ref.visible()
        for w in set(p.description.lower().split())
        if w.isalpha() and len(w) > 5
    )
    return counts.most_common(1)[0][0]


async def test_relevance_pages_walk_without_duplicates(writable: tuple[Database, GraphQL]) -> None:
    db, gql = writable
    term = common_word(await load_catalog(db))
    query = """query($q: String, $after: String) { products(search: $q, first: 7, after: $after) {
        totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    cursor = None
    while True:
        page = (await gql(query, {"q": term, "after": cursor}))["data"]["products"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        cursor = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == page["totalCount"] > 7


def _key(global_id: str) -> str:
    import base64

    return base64.b64decode(global_id).decode().split(":")[1]
