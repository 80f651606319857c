"""A category page (a category by slug or id, a page of its children, a page of its products) is
one statement on PostgreSQL: the category's row carries both pages (models.catalog.queries,
"category pages"; schema.lookahead.nested_fields reads the pages' arguments). The answers,
errors included, are exactly those of the connections' own batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from accounts_factory import gid
from conftest import TEST_DATABASE_URL
from test_embedded_relations import edge_catalog_clients

from models.db import Database
from resolvers import catalog as r

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="a category page is one statement on PostgreSQL only"
)

PRODUCT = """id name slug isPublished priceRange { start { amount currency } }
  variants { id sku name price { amount } quantityAvailable } images { url alt }
  category { id slug parent { slug } }"""

PAGE = f"""query($slug: String, $id: ID, $c: Int, $p: Int, $after: String, $before: String) {{
  category(slug: $slug, id: $id) {{
    id name slug level parent {{ slug }}
    children(first: $c) {{ totalCount nodes {{ id name slug }}
      pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }}
    products(first: $p, after: $after, before: $before) {{ totalCount
      edges {{ cursor node {{ {PRODUCT} }} }}
      pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }}
  }}
}}"""

BACKWARD = """query($slug: String, $id: ID, $n: Int, $before: String) {
  category(slug: $slug, id: $id) {
    children(last: $n) { nodes { slug } pageInfo { hasPreviousPage startCursor } }
    products(last: $n, before: $before) { nodes { slug variants { sku } }
      pageInfo { hasNextPage hasPreviousPage } }
  }
}"""

FRAGMENTS = """query($slug: String, $id: ID) { category(slug: $slug, id: $id) { ...Page } }
fragment Page on Category { slug ... on Category { children { nodes { slug } } }
  products(first: 5) { nodes { ...P } } }
fragment P on Product { slug images { url } }"""

# Each is answered by the connections' own resolvers: not embedded, the same answer.
NOT_EMBEDDED = [
    # two response keys for one connection
    """query($slug: String!) { category(slug: $slug) {
      a: products(first: 2) { nodes { slug } } b: products(first: 3) { nodes { slug } } } }""",
    # arguments the category's statement does not take
    """query($slug: String!) { category(slug: $slug) {
      products(first: 4, sortBy: {field: PRICE, direction: ASC}) { nodes { slug } }
      children(first: 2) { nodes { slug } } } }""",
    """query($slug: String!) { category(slug: $slug) {
      products(first: 4, filter: {inStock: true}) { nodes { slug } } } }""",
    # no page asked for: by id, the category's loader
    """query($id: ID!) { category(id: $id) { slug level parent { slug } } }""",
]

# Bad arguments: each error is reported where it is, the rest of the page still answers.
BAD = [
    (
        "query($slug: String!) { category(slug: $slug) { slug children(first: 101) { nodes { slug } }"
        " products(first: 2) { nodes { slug } } } }",
        {},
    ),
    (
        "query($slug: String!) { category(slug: $slug) { slug children(first: 2) { nodes { slug } }"
        " products(first: -1) { nodes { slug } } } }",
        {},
    ),
    (
        "query($slug: String!, $a: String) { category(slug: $slug) { slug"
        " products(first: 2, after: $a) { nodes { slug } } } }",
        {"a": "not-a-cursor"},
    ),
    (
        "query($slug: String!, $a: String) { category(slug: $slug) { slug"
        " children(after: $a) { nodes { slug } } } }",
        {"a": "x" * 5000},
    ),
    (
        "query($slug: String!) { category(slug: $slug) { slug"
        " products(first: 2, last: 2) { nodes { slug } } } }",
        {},
    ),
    (
        "query($slug: String!) { category(slug: $slug) { slug"
        " products(first: 2) @skip(if: true) { nodes { slug } } children(first: 1) { nodes { slug } } } }",
        {},
    ),
    # wrong types: refused before anything runs
    (
        "query($slug: String!, $n: Int) { category(slug: $slug) {"
        " products(first: $n) { nodes { slug } } } }",
        {"n": "twenty"},
    ),
    (
        'query($slug: String!) { category(slug: $slug) { products(first: "2") { nodes { slug } } } }',
        {},
    ),
]

EMBEDDED = 20  # the first cases: 10 pages by slug, the same 10 by id

HOSTILE_SLUGS = [
    "no-such-category",
    "'; DROP TABLE categories; --",
    "%",
    "_",
    "\u202e\U0001f4a5 ünïcode",
    "x" * 255,
]

# IDs that find no category, or are refused (BAD_USER_INPUT at `category`)
HOSTILE_IDS = [
    gid("Category", 10**12),
    gid("Category", 2**62),
    gid("Product", 1),
    "not-an-id",
    "'; DROP TABLE categories; --",
    "x" * 5000,
]


@pytest.fixture
async def clients(fresh_db: Database) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with edge_catalog_clients(fresh_db) as viewers:  # hidden, bare, shuffled products
        yield viewers


async def _post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code in (200, 400), response.text
    body = response.json()
    body["status"] = response.status_code
    return body


def _sql(body: Any) -> int:
    return int(body["extensions"]["sql"]["count"])


def _without_sql(body: Any) -> Any:
    return {key: value for key, value in body.items() if key != "extensions"}


async def _slugs(client: httpx.AsyncClient) -> dict[str, str]:
    """A category with children (the edge products' root), a leaf, and their IDs."""
    body = await _post(
        client,
        "{ categories(first: 100) { nodes { id slug parent { id } children { totalCount } } } }",
        {},
    )
    nodes = body["data"]["categories"]["nodes"]
    roots = [n for n in nodes if n["parent"] is None and n["children"]["totalCount"] > 1]
    leaves = [n for n in nodes if n["children"]["totalCount"] == 0]
    assert roots and leaves
    return {
        "root": roots[0]["slug"],
        "leaf": leaves[0]["slug"],
        "root_id": roots[0]["id"],
        "leaf_id": leaves[0]["id"],
    }


async def _cases(client: httpx.AsyncClient) -> list[tuple[str, dict[str, Any]]]:
    slugs = await _slugs(client)
    first = await _post(client, PAGE, {"slug": slugs["root"], "c": 3, "p": 5})
    cursor = first["data"]["category"]["products"]["pageInfo"]["endCursor"]
    by_slug: list[tuple[str, dict[str, Any]]] = [
        (PAGE, {"slug": slugs["root"], "c": 3, "p": 5}),
        (PAGE, {"slug": slugs["root"], "c": 20, "p": 24}),
        (PAGE, {"slug": slugs["root"], "c": 100, "p": 100}),
        (PAGE, {"slug": slugs["root"], "c": 0, "p": 0}),
        (PAGE, {"slug": slugs["root"], "p": 4, "after": cursor}),
        (PAGE, {"slug": slugs["root"], "p": 4, "before": cursor}),
        (PAGE, {"slug": slugs["leaf"], "c": 5, "p": 5}),
        (BACKWARD, {"slug": slugs["root"], "n": 3}),
        (BACKWARD, {"slug": slugs["root"], "n": 2, "before": cursor}),
        (FRAGMENTS, {"slug": slugs["root"]}),
    ]
    ids = {slugs["root"]: slugs["root_id"], slugs["leaf"]: slugs["leaf_id"]}
    by_id = [
        (
            query,
            {**{k: v for k, v in variables.items() if k != "slug"}, "id": ids[variables["slug"]]},
        )
        for query, variables in by_slug
    ]
    cases = [*by_slug, *by_id]  # EMBEDDED of them: both pages embedded
    cases += [(PAGE, {"slug": slug, "c": 2, "p": 2}) for slug in HOSTILE_SLUGS]
    cases += [(PAGE, {"id": id, "c": 2, "p": 2}) for id in HOSTILE_IDS]
    cases += [
        (query, {"id": slugs["root_id"]} if "$id" in query else {"slug": slugs["root"]})
        for query in NOT_EMBEDDED
    ]
    cases += [(query, {"slug": slugs["root"], **variables}) for query, variables in BAD]
    return cases


async def test_a_category_page_answers_what_the_batches_answer(
    clients: dict[str, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = await _cases(clients["anonymous"])
    embedded = {
        (viewer, i): await _post(client, query, variables)
        for viewer, client in clients.items()
        for i, (query, variables) in enumerate(cases)
    }
    with monkeypatch.context() as patched:
        patched.setattr(r, "_category_pages", lambda ctx, children, products: (None, None))
        for viewer, client in clients.items():
            for i, (query, variables) in enumerate(cases):
                batched = await _post(client, query, variables)
                assert _without_sql(embedded[viewer, i]) == _without_sql(batched), (
                    viewer,
                    query,
                    variables,
                )
                if i < EMBEDDED:  # both pages embedded: two statements fewer
                    assert _sql(embedded[viewer, i]) == _sql(batched) - 2, (viewer, i)

    # The cases say what they mean to: pages found, hidden products per viewer, errors
    staff_page = embedded["staff", 1]["data"]["category"]
    anonymous_page = embedded["anonymous", 1]["data"]["category"]
    assert len(anonymous_page["children"]["nodes"]) > 1
    staff_slugs = [e["node"]["slug"] for e in staff_page["products"]["edges"]]
    anonymous_slugs = [e["node"]["slug"] for e in anonymous_page["products"]["edges"]]
    assert "hidden-product" in staff_slugs and "hidden-product" not in anonymous_slugs
    shuffled = next(
        e["node"]
        for e in anonymous_page["products"]["edges"]
        if e["node"]["slug"] == "shuffled-product"
    )
    assert [v["sku"][:2] for v in shuffled["variants"]] == ["zz", "aa", "mm"]
    assert [i["url"][-5:] for i in shuffled["images"]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert anonymous_page["products"]["totalCount"] > 24
    assert embedded["anonymous", 4]["data"]["category"]["products"]["pageInfo"]["hasPreviousPage"]
    for i in range(10):  # by id, the same page as by slug
        assert _without_sql(embedded["anonymous", i]) == _without_sql(embedded["anonymous", 10 + i])
    for i in range(EMBEDDED, EMBEDDED + len(HOSTILE_SLUGS) + 2):
        assert embedded["anonymous", i]["data"] == {"category": None}, i
    refused = range(
        EMBEDDED + len(HOSTILE_SLUGS) + 2, EMBEDDED + len(HOSTILE_SLUGS) + len(HOSTILE_IDS)
    )
    for i in refused:
        body = embedded["anonymous", i]
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            (["category"], "BAD_USER_INPUT")
        ], body
    bad = {i: embedded["anonymous", i] for i in range(len(cases) - len(BAD), len(cases))}
    paths = [[e.get("path") for e in body.get("errors", [])] for body in bad.values()]
    assert paths[:5] == [
        [["category", "children"]],
        [["category", "products"]],
        [["category", "products"]],
        [["category", "children"]],
        [["category", "products"]],
    ]
    # The connections are non-null: an error in one nulls the category (nullable)
    assert [body["data"] for body in list(bad.values())[:5]] == [{"category": None}] * 5
    assert list(bad.values())[5]["data"]["category"]["children"]["nodes"]
    assert "errors" not in list(bad.values())[5]
    codes = [[e["extensions"]["code"] for e in body["errors"]] for body in list(bad.values())[6:]]
    assert codes == [["BAD_USER_INPUT"], ["GRAPHQL_VALIDATION_FAILED"]]
    assert all(body["data"] is None for body in list(bad.values())[6:])


async def test_a_category_page_is_one_statement_for_any_page_size(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    slugs = await _slugs(clients["anonymous"])
    query = PAGE.replace("totalCount", "").replace("parent { slug }", "")
    for viewer, client in clients.items():
        session = 1 if viewer == "staff" else 0  # the staff token's session lookup
        counted = await _post(
            client,
            "query($slug: String!) { category(slug: $slug) { products { totalCount } } }",
            {"slug": slugs["root"]},
        )
        total = counted["data"]["category"]["products"]["totalCount"]
        assert 24 < total < 100
        for key in ({"slug": slugs["root"]}, {"id": slugs["root_id"]}):
            for c, p in ((1, 1), (20, 24), (100, 100)):
                body = await _post(client, query, {**key, "c": c, "p": p})
                assert "errors" not in body, body
                assert len(body["data"]["category"]["products"]["edges"]) == min(p, total)
                # The category, its children, its products and the products' variants,
                # images and categories
                assert _sql(body) == 1 + session, (viewer, key, c, p)
        # The children's parent is the category itself: no statement either
        body = await _post(
            client,
            "query($slug: String!) { category(slug: $slug) {"
            " children(first: 50) { nodes { parent { slug } } } } }",
            {"slug": slugs["root"]},
        )
        parents = {n["parent"]["slug"] for n in body["data"]["category"]["children"]["nodes"]}
        assert (parents, _sql(body)) == ({slugs["root"]}, 1 + session)
    bench_page = """query($slug: String!) { category(slug: $slug) { id name slug
      children(first: 20) { nodes { id name slug } }
      products(first: 24) { nodes { id name slug variants { sku } images { url }
        category { id name slug } } pageInfo { hasNextPage endCursor } } } }"""
    body = await _post(clients["anonymous"], bench_page, {"slug": slugs["root"]})
    assert _sql(body) == 1
