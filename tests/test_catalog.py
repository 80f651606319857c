"""Browsing the catalog through HTTP, checked against the tables themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from catalog_reference import Catalog, Product, amount, gid, load_catalog
from conftest import GraphQL, make_client

from models.db import Database
from models.settings import QueryLimits

PRODUCT_FIELDS = """
  id name slug description isPublished createdAt updatedAt isAvailable
  category { id name }
  collections { id name }
  variants { id sku name price { amount currency } quantityAvailable product { id } }
  images { url alt }
  priceRange { start { amount currency } stop { amount currency } }
"""


@pytest.fixture
async def client(catalog_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """Whole-catalog reads checked against the tables: beyond the default query cost limit (tests/test_limits.py)."""
    async with make_client(catalog_db, query_limits=QueryLimits(max_cost=100_000)) as c:
        yield c


@pytest.fixture
async def ref(catalog_db: Database) -> Catalog:
    return await load_catalog(catalog_db)


def _assert_product(node: dict[str, Any], p: Product, ref: Catalog) -> None:
    assert node["id"] == gid("Product", p.id)
    assert (node["name"], node["slug"], node["description"]) == (p.name, p.slug, p.description)
    assert node["isPublished"] is True
    assert node["isAvailable"] == p.in_stock
    created = datetime.fromisoformat(node["createdAt"])
    assert created == p.created_at and created.utcoffset() == timedelta(0)
    if p.category_id is None:
        assert node["category"] is None
    else:
        assert node["category"] == {
            "id": gid("Category", p.category_id),
            "name": ref.categories[p.category_id]["name"],
        }
    assert sorted(c["id"] for c in node["collections"]) == sorted(
        gid("Collection", c) for c in p.collection_ids
    )
    assert node["variants"] == [
        {
            "id": gid("ProductVariant", v["id"]),
            "sku": v["sku"],
            "name": v["name"],
            "price": {"amount": amount(v["price_amount"]), "currency": "USD"},
            "quantityAvailable": v["quantity"],
            "product": {"id": gid("Product", p.id)},
        }
        for v in p.variants
    ]
    assert node["images"] == [{"url": i["url"], "alt": i["alt"]} for i in p.images]
    assert node["priceRange"] == {
        "start": {"amount": amount(p.price_min), "currency": "USD"},
        "stop": {"amount": amount(p.price_max), "currency": "USD"},
    }


async def test_product_by_id_and_by_slug_return_every_field(gql: GraphQL, ref: Catalog) -> None:
    for p in ref.published_with_variants()[:5]:
        by_id = await gql(
            f"query($id: ID!) {{ product(id: $id) {{ {PRODUCT_FIELDS} }} }}",
            {"id": gid("Product", p.id)},
        )
        by_slug = await gql(
            f"query($s: String!) {{ product(slug: $s) {{ {PRODUCT_FIELDS} }} }}", {"s": p.slug}
        )
        assert by_id["data"]["product"] == by_slug["data"]["product"]
        _assert_product(by_id["data"]["product"], p, ref)


async def test_products_lists_published_products_newest_first(gql: GraphQL, ref: Catalog) -> None:
    body = await gql(f"{{ products(first: 100) {{ totalCount nodes {{ {PRODUCT_FIELDS} }} }} }}")
    page = body["data"]["products"]
    expected = ref.ordered(ref.visible(), "CREATED_AT", descending=True)[:100]
    assert page["totalCount"] == len(ref.visible())
    assert [n["id"] for n in page["nodes"]] == [gid("Product", p.id) for p in expected]
    for node, p in zip(page["nodes"], expected, strict=True):
        _assert_product(node, p, ref)


async def test_unpublished_products_are_invisible_through_every_path(
    gql: GraphQL, ref: Catalog
) -> None:
    hidden = ref.unpublished()
    assert hidden, "the seeded catalog has unpublished products"
    p = hidden[0]
    pid = gid("Product", p.id)
    variant = p.variants[0]
    body = await gql(
        """query($id: ID!, $slug: String!, $vid: ID!, $sku: String!, $name: String!) {
          product(id: $id) { id } bySlug: product(slug: $slug) { id }
          node(id: $id) { id } nodes(ids: [$id, $vid]) { id }
          variant(id: $vid) { id } bySku: variant(sku: $sku) { id }
          byIds: products(filter: {ids: [$id]}) { totalCount nodes { id } }
          search: products(search: $name, first: 100) { nodes { id } }
        }""",
        {"id": pid, "slug": p.slug, "vid": gid("ProductVariant", variant["id"]),
         "sku": variant["sku"], "name": p.name},
    )  # fmt: skip
    data = body["data"]
    assert data["product"] is None and data["bySlug"] is None and data["node"] is None
    assert data["nodes"] == [None, None]
    assert data["variant"] is None and data["bySku"] is None
    assert data["byIds"] == {"totalCount": 0, "nodes": []}
    assert pid not in {n["id"] for n in data["search"]["nodes"]}
    # Nested lists never show it either.
    all_ids: set[str] = set()
    for hidden_product in hidden:
        if hidden_product.category_id is None:
            continue
        nested = await gql(
            """query($c: ID!) { category(id: $c) { products(first: 100) { nodes { id } } } }""",
            {"c": gid("Category", hidden_product.category_id)},
        )
        all_ids |= {n["id"] for n in nested["data"]["category"]["products"]["nodes"]}
    coll = await gql(
        "{ collections(first: 100) { nodes { products(first: 100) { nodes { id } } } } }"
    )
    for c in coll["data"]["collections"]["nodes"]:
        all_ids |= {n["id"] for n in c["products"]["nodes"]}
    assert not all_ids & {gid("Product", h.id) for h in hidden}


async def test_variant_by_id_and_sku(gql: GraphQL, ref: Catalog) -> None:
    p = ref.published_with_variants()[3]
    v = p.variants[-1]
    query = "query($id: ID, $sku: String) { variant(id: $id, sku: $sku) { id sku name price { amount } quantityAvailable product { slug } } }"
    by_id = await gql(query, {"id": gid("ProductVariant", v["id"])})
    by_sku = await gql(query, {"sku": v["sku"]})
    assert by_id["data"] == by_sku["data"]
    assert by_id["data"]["variant"] == {
        "id": gid("ProductVariant", v["id"]),
        "sku": v["sku"],
        "name": v["name"],
        "price": {"amount": amount(v["price_amount"])},
        "quantityAvailable": v["quantity"],
        "product": {"slug": p.slug},
    }
    missing = await gql(query, {"sku": "NO-SUCH-SKU"})
    assert missing["data"]["variant"] is None


async def test_category_tree_parent_children_and_descendant_products(
    gql: GraphQL, ref: Catalog
) -> None:
    root = next(c for c in ref.categories.values() if c["level"] == 0)
    body = await gql(
        """query($slug: String!) { category(slug: $slug) {
            id name slug description level parent { id }
            children(first: 100) { totalCount nodes { id name level parent { id }
              children(first: 100) { nodes { name level parent { name parent { name } } } } } }
            products(first: 100) { totalCount nodes { id } }
        } }""",
        {"slug": root["slug"]},
    )
    cat = body["data"]["category"]
    assert cat["id"] == gid("Category", root["id"])
    assert (cat["name"], cat["level"], cat["parent"]) == (root["name"], 0, None)
    children = sorted(
        (c for c in ref.categories.values() if c["parent_id"] == root["id"]),
        key=lambda c: (c["name"], c["id"]),
    )
    assert cat["children"]["totalCount"] == len(children)
    assert [c["name"] for c in cat["children"]["nodes"]] == [c["name"] for c in children]
    for child in cat["children"]["nodes"]:
        assert child["level"] == 1 and child["parent"] == {"id": cat["id"]}
        for grandchild in child["children"]["nodes"]:
            assert grandchild["level"] == 2
            assert grandchild["parent"] == {"name": child["name"], "parent": {"name": root["name"]}}
    subtree = ref.subtree(root["id"])
    expected = ref.ordered(
        [p for p in ref.visible() if p.category_id in subtree], "CREATED_AT", True
    )
    assert cat["products"]["totalCount"] == len(expected)
    assert [n["id"] for n in cat["products"]["nodes"]] == [
        gid("Product", p.id) for p in expected[:100]
    ]


async def test_categories_by_level(gql: GraphQL, ref: Catalog) -> None:
    for level in (0, 1, 2):
        body = await gql(
            "query($l: Int) { categories(level: $l, first: 100) "
            "{ totalCount nodes { name level } } }",
            {"l": level},
        )
        expected = sorted(
            (c for c in ref.categories.values() if c["level"] == level),
            key=lambda c: (c["name"], c["id"]),
        )
        page = body["data"]["categories"]
        assert page["totalCount"] == len(expected)
        assert [(n["name"], n["level"]) for n in page["nodes"]] == [
            (c["name"], level) for c in expected
        ]


async def test_collections_and_their_products_sorted_by_price(gql: GraphQL, ref: Catalog) -> None:
    body = await gql(
        """{ collections(first: 100) { totalCount nodes { id name slug description
            products(first: 100, sortBy: {field: PRICE, direction: ASC}) {
              totalCount nodes { id priceRange { start { amount } } } } } } }"""
    )
    page = body["data"]["collections"]
    expected_cols = sorted(ref.collections.values(), key=lambda c: (c["name"], c["id"]))
    assert page["totalCount"] == len(expected_cols)
    for node, col in zip(page["nodes"], expected_cols, strict=True):
        assert (node["name"], node["slug"], node["description"]) == (
            col["name"],
            col["slug"],
            col["description"],
        )
        members = [p for p in ref.visible() if col["id"] in p.collection_ids]
        expected = ref.ordered(members, "PRICE", descending=False)
        assert node["products"]["totalCount"] == len(members)
        assert [n["id"] for n in node["products"]["nodes"]] == [
            gid("Product", p.id) for p in expected[:100]
        ]
    one = await gql(
        "query($s: String!) { collection(slug: $s) { id } }", {"s": expected_cols[0]["slug"]}
    )
    assert one["data"]["collection"] == {"id": gid("Collection", expected_cols[0]["id"])}


@pytest.mark.parametrize("field", ["NAME", "PRICE", "CREATED_AT"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_sorting(gql: GraphQL, ref: Catalog, field: str, direction: str) -> None:
    body = await gql(
        "query($s: ProductSortBy) { products(first: 100, sortBy: $s) { nodes { id } } }",
        {"s": {"field": field, "direction": direction}},
    )
    expected = ref.ordered(ref.visible(), field, descending=direction == "DESC")[:100]
    assert [n["id"] for n in body["data"]["products"]["nodes"]] == [
        gid("Product", p.id) for p in expected
    ]


def _filter_cases(ref: Catalog) -> list[tuple[dict[str, Any], list[Product]]]:
    visible = ref.visible()
    mid_category = next(c for c in ref.categories.values() if c["level"] == 1)
    subtree = ref.subtree(mid_category["id"])
    collection_id = min(ref.collections)
    prices = sorted(p.price_min for p in visible if p.variants)
    low, high = prices[len(prices) // 4], prices[len(prices) // 2]
    ids = [p.id for p in visible[:7]] + [p.id for p in ref.unpublished()[:2]]

    def priced(p: Product, gte: int | None, lte: int | None) -> bool:
        return any(
            (gte is None or v["price_amount"] >= gte) and (lte is None or v["price_amount"] <= lte)
            for v in p.variants
        )

    return [
        ({"categoryId": gid("Category", mid_category["id"])},
         [p for p in visible if p.category_id in subtree]),
        ({"collectionId": gid("Collection", collection_id)},
         [p for p in visible if collection_id in p.collection_ids]),
        ({"priceGte": amount(low)}, [p for p in visible if priced(p, low, None)]),
        ({"priceLte": amount(low)}, [p for p in visible if priced(p, None, low)]),
        ({"priceGte": amount(low), "priceLte": amount(high)},
         [p for p in visible if priced(p, low, high)]),
        ({"inStock": True}, [p for p in visible if p.in_stock]),
        ({"inStock": False}, [p for p in visible if not p.in_stock]),
        ({"ids": [gid("Product", i) for i in ids]}, [p for p in visible if p.id in ids]),
        ({"categoryId": gid("Category", mid_category["id"]), "inStock": True,
          "priceGte": amount(low)},
         [p for p in visible if p.category_id in subtree and p.in_stock and priced(p, low, None)]),
    ]  # fmt: skip


async def test_filters_match_the_reference(gql: GraphQL, ref: Catalog) -> None:
    for product_filter, matching in _filter_cases(ref):
        assert matching, f"filter {product_filter} should match something in the seeded catalog"
        body = await gql(
            "query($f: ProductFilter) { products(first: 100, filter: $f) "
            "{ totalCount nodes { id } } }",
            {"f": product_filter},
        )
        page = body["data"]["products"]
        expected = ref.ordered(matching, "CREATED_AT", descending=True)
        assert page["totalCount"] == len(matching), product_filter
        assert [n["id"] for n in page["nodes"]] == [gid("Product", p.id) for p in expected[:100]]


def _word_in(term: str, p: Product) -> bool:
    return term in f"{p.name} {p.description}".lower()


async def test_search_finds_matches_and_ranks_name_hits_first(gql: GraphQL, ref: Catalog) -> None:
    visible = ref.visible()
    # A word that appears in some product names and in other products' descriptions only.
    counts: dict[str, tuple[int, int]] = {}
    for p in visible:
        for word in {w.lower() for w in p.name.split() if w.isalpha() and len(w) > 4}:
            in_name = sum(word in q.name.lower().split() for q in visible)
            only_desc = sum(
                word not in q.name.lower() and word in q.description.lower() for q in visible
            )
            counts[word] = (in_name, only_desc)
    term = max(counts, key=lambda w: min(counts[w]))
    body = await gql(
        "query($q: String!) { products(search: $q, first: 100) { totalCount nodes { id name } } }",
        {"q": term.upper()},
    )
    page = body["data"]["products"]
    assert page["totalCount"] >= sum(counts[term]) > 0
    found = [ref.products[int(_key(n["id"]))] for n in page["nodes"]]
    assert all(_word_in(term, p) for p in found)
    name_hits = [term in p.name.lower() for p in found]
    # Relevance: every product with the word in its name ranks above those without.
    assert name_hits == sorted(name_hits, reverse=True)
    by_name = await gql(
        "query($q: String!) { products(search: $q, first: 100, sortBy: {field: NAME, direction: ASC}) { nodes { name } } }",
        {"q": term},
    )
    names = [n["name"] for n in by_name["data"]["products"]["nodes"]]
    assert names == sorted(names) and len(names) == len(found)


async def test_search_matches_word_prefixes_and_every_word(gql: GraphQL, ref: Catalog) -> None:
    p = ref.published_with_variants()[0]
    words = [w for w in p.name.split() if w.isalpha() and len(w) > 3]
    prefix = words[-1][: max(4, len(words[-1]) - 2)]
    body = await gql(
        "query($q: String!) { products(search: $q, first: 100) { nodes { id } } }",
        {"q": f"{words[0]} {prefix}"},
    )
    ids = [n["id"] for n in body["data"]["products"]["nodes"]]
    assert gid("Product", p.id) in ids
    for node_id in ids:
        hit = ref.products[int(_key(node_id))]
        assert _word_in(words[0].lower()[:4], hit) and _word_in(prefix.lower(), hit)
    none = await gql('{ products(search: "zzzqqqxxy") { totalCount nodes { id } } }')
    assert none["data"]["products"] == {"totalCount": 0, "nodes": []}


async def test_node_resolves_every_type_and_nodes_keeps_order(gql: GraphQL, ref: Catalog) -> None:
    p = ref.published_with_variants()[0]
    cat_id = next(iter(ref.categories))
    col_id = next(iter(ref.collections))
    ids = [
        gid("Product", p.id),
        gid("ProductVariant", p.variants[0]["id"]),
        gid("Category", cat_id),
        gid("Collection", col_id),
        gid("Product", 10**9),
    ]
    body = await gql(
        """query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
             ... on Product { slug } ... on ProductVariant { sku }
             ... on Category { slug } ... on Collection { slug } } }""",
        {"ids": ids},
    )
    assert body["data"]["nodes"] == [
        {"__typename": "Product", "id": ids[0], "slug": p.slug},
        {"__typename": "ProductVariant", "id": ids[1], "sku": p.variants[0]["sku"]},
        {"__typename": "Category", "id": ids[2], "slug": ref.categories[cat_id]["slug"]},
        {"__typename": "Collection", "id": ids[3], "slug": ref.collections[col_id]["slug"]},
        None,
    ]
    for i in ids[:4]:
        one = await gql("query($id: ID!) { node(id: $id) { id } }", {"id": i})
        assert one["data"]["node"] == {"id": i}


def _key(global_id: str) -> str:
    import base64

    return base64.b64decode(global_id).decode().split(":")[1]
