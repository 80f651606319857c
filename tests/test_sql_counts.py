"""No N+1: the SQL statements a request runs do not grow with page size or nesting width.

Counts come from `extensions.sql.count`, which debug mode adds to every response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from catalog_reference import gid
from conftest import GraphQL, make_client

from models.db import Database
from models.settings import QueryLimits

PRODUCTS = """query($n: Int) { products(first: $n) { edges { node {
  name category { name parent { name } } variants { sku price { amount } }
  images { url } collections { name } } } } }"""

NESTED_CATEGORIES = """query($n: Int, $m: Int) { categories(first: $n) { edges { node {
  products(first: $m) { edges { node { variants { sku } } } } } } } }"""

WIDE = """query($n: Int, $m: Int) {
  categories(first: $n, level: 0) { totalCount nodes { name parent { name }
    children(first: $m) { totalCount nodes { name
      products(first: $m, sortBy: {field: PRICE, direction: DESC}) { totalCount
        nodes { name priceRange { start { amount } } category { name } images { url } } } } } } }
  collections(first: $n) { nodes { products(first: $m) { totalCount nodes { slug
    collections { name } variants { product { name } } } } } }
}"""

SEARCH = """query($n: Int) { products(search: "perfect", first: $n) { totalCount
  nodes { name variants { sku } category { name parent { name } } } } }"""


@pytest.fixture
async def client(catalog_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """Statement counts over wide nesting (thousands of objects): beyond the default query cost limit (tests/test_limits.py)."""
    async with make_client(catalog_db, query_limits=QueryLimits(max_cost=100_000)) as c:
        yield c


async def _count(gql: GraphQL, query: str, **variables: object) -> int:
    body = await gql(query, variables)
    count = body["extensions"]["sql"]["count"]
    assert isinstance(count, int) and count > 0
    return count


async def test_product_listing_runs_the_same_statements_for_any_page_size(gql: GraphQL) -> None:
    counts = [await _count(gql, PRODUCTS, n=n) for n in (1, 20, 100)]
    assert counts[0] == counts[1] == counts[2], counts
    assert counts[0] <= 7, counts
    body = await gql(PRODUCTS, {"n": 100})
    assert len(body["data"]["products"]["edges"]) == 100


async def test_nested_category_products_run_constant_statements(gql: GraphQL) -> None:
    counts = [
        await _count(gql, NESTED_CATEGORIES, n=n, m=m) for n, m in ((1, 1), (20, 5), (50, 20))
    ]
    assert len(set(counts)) == 1, counts
    body = await gql(NESTED_CATEGORIES, {"n": 20, "m": 5})
    edges = body["data"]["categories"]["edges"]
    assert len(edges) == 20 and any(e["node"]["products"]["edges"] for e in edges)


async def test_wide_nesting_with_counts_is_constant(gql: GraphQL) -> None:
    counts = [await _count(gql, WIDE, n=n, m=m) for n, m in ((1, 1), (3, 4), (10, 20))]
    assert len(set(counts)) == 1, counts


async def test_search_with_nesting_is_constant(gql: GraphQL) -> None:
    counts = [await _count(gql, SEARCH, n=n) for n in (1, 10, 100)]
    assert len(set(counts)) == 1, counts
    body = await gql(SEARCH, {"n": 100})
    assert body["data"]["products"]["totalCount"] > 10


@pytest.mark.parametrize("width", [1, 30])
async def test_nodes_batches_by_type(gql: GraphQL, width: int) -> None:
    ids = [gid("Product", i) for i in range(1, width + 1)] + [
        gid("Category", i) for i in range(1, width + 1)
    ]
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Product { variants { sku } } } }"
    # Products, their variants, categories: three batches whatever the width.
    assert await _count(gql, query, ids=ids) == 3
