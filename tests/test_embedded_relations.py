"""A page of products carries the relations the query selects (variants, images, category)
in its own statement on PostgreSQL (models.catalog.queries, "embedded relations";
schema.lookahead says what is selected): the answers are exactly those the relations' own
batches give, in fewer statements.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import add_user, mint_token
from catalog_reference import gid
from conftest import TEST_DATABASE_URL, make_client

from models.catalog import queries as q
from models.catalog.tables import categories, images, products, variants
from models.db import Database

PRODUCT = """id name slug isPublished priceRange { start { amount } stop { amount } }
  variants { id sku name price { amount currency } quantityAvailable }
  images { url alt } category { id name slug parent { name } }"""

DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    (f"query($n: Int) {{ products(first: $n) {{ nodes {{ {PRODUCT} }} }} }}", {"n": 100}),
    (
        "query($n: Int) { products(first: $n, sortBy: {field: NAME, direction: ASC}) {"
        " edges { cursor node { ...P } } pageInfo { hasNextPage endCursor } } }"
        f" fragment P on Product {{ {PRODUCT} }}",
        {"n": 40},
    ),
    (
        "query($n: Int) { products(last: $n) { nodes { ... on Product { variants { sku } } } }"
        " a: products(first: 3) { nodes { images { url } } } }",
        {"n": 30},
    ),
    (
        "query($s: String!) { products(first: 24, search: $s) { nodes { slug category { slug } } } }",
        {"s": "perfect"},
    ),
    (
        "query($slug: String!) { product(slug: $slug) { slug variants { sku } images { url } } }",
        {"slug": "bare-product"},
    ),
    (
        "query($slug: String!) { product(slug: $slug) { ...on Product { category { name } } } }",
        {"slug": "hidden-product"},
    ),
    (
        "query($slug: String!) { product(slug: $slug) {"
        " slug images { url } variants { sku } category { name } } }",
        {"slug": "shuffled-product"},
    ),
    (
        "{ categories(first: 30) { nodes { slug products(first: 5) {"
        " nodes { slug variants { sku } images { url } category { slug } } } } } }",
        {},
    ),
    (
        "{ collections(first: 10) { nodes { products(first: 10) {"
        " edges { node { slug variants { sku price { amount } } } } } } } }",
        {},
    ),
    (
        "query($n: Int, $skip: Boolean!) { products(first: $n) {"
        " nodes { slug variants @skip(if: $skip) { sku } images @include(if: $skip) { url } } } }",
        {"n": 20, "skip": True},
    ),
]


async def _add_edge_products(db: Database) -> None:
    """Products whose relations are empty, hidden or stored out of order."""
    now = datetime.now(UTC) + timedelta(days=1)  # newest: first in the default listing
    async with db.transaction() as conn:
        category_id = (await conn.execute(sa.select(sa.func.min(categories.c.id)))).scalar_one()

        async def product(slug: str, *, published: bool, category: int | None, age: int) -> int:
            result = await conn.execute(
                products.insert()
                .values(
                    name=slug.replace("-", " ").title(),
                    slug=slug,
                    description="edge",
                    is_published=published,
                    category_id=category,
                    price_min=100,
                    price_max=900,
                    currency="USD",
                    created_at=now - timedelta(minutes=age),
                    updated_at=now,
                )
                .returning(products.c.id)
            )
            return int(result.scalar_one())

        await product("bare-product", published=True, category=None, age=1)
        hidden = await product("hidden-product", published=False, category=category_id, age=2)
        shuffled = await product("shuffled-product", published=True, category=category_id, age=3)
        for product_id in (hidden, shuffled):
            for sku, price in (("zz", 900), ("aa", 100), ("mm", 500)):  # ids not in sku order
                await conn.execute(
                    variants.insert().values(
                        product_id=product_id,
                        sku=f"{sku}-{product_id}",
                        name=f'Size {sku} "quoted", {{brace}} (paren)',
                        price_amount=price,
                        currency="USD",
                        quantity=0 if sku == "mm" else 3,
                        created_at=now,
                        updated_at=now,
                    )
                )
            for position in (2, 0, 1):  # inserted out of position order
                await conn.execute(
                    images.insert().values(
                        product_id=product_id,
                        position=position,
                        url=f"https://img.example/{product_id}/{position}.jpg",
                        alt=f'alt, with (parens) "quotes" and \\ {position}',
                    )
                )


@contextlib.asynccontextmanager
async def edge_catalog_clients(db: Database) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The edge products added to `db`, and a client for each viewer: one anonymous, one
    staff member who sees unpublished products."""
    await _add_edge_products(db)
    staff = await add_user(
        db, "embed-staff@example.com", is_staff=True, permissions=["MANAGE_PRODUCTS"]
    )
    token = await mint_token(db, staff)
    async with make_client(db) as anonymous, make_client(db) as staff_client:
        staff_client.headers["authorization"] = f"Bearer {token}"
        yield {"anonymous": anonymous, "staff": staff_client}


@pytest.fixture
async def clients(fresh_db: Database) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with edge_catalog_clients(fresh_db) as viewers:
        yield viewers


async def _answer(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="relations are embedded on PostgreSQL only")
async def test_embedded_relations_answer_what_the_batches_answer(
    clients: dict[str, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: dict[tuple[str, int], tuple[Any, int]] = {}
    for viewer, client in clients.items():
        for i, (query, variables) in enumerate(DOCUMENTS):
            body = await _answer(client, query, variables)
            answers[viewer, i] = (body["data"], body["extensions"]["sql"]["count"])
    with monkeypatch.context() as patched:
        patched.setattr(q, "embeddable", lambda dialect, selected: frozenset())
        for viewer, client in clients.items():
            for i, (query, variables) in enumerate(DOCUMENTS):
                body = await _answer(client, query, variables)
                embedded, statements = answers[viewer, i]
                assert embedded == body["data"], (viewer, query)
                # Each document selects a relation of a product it finds, so embedding
                # saves statements (the anonymous viewer does not find the hidden one)
                batched = body["extensions"]["sql"]["count"]
                if (viewer, i) == ("anonymous", 5):
                    assert statements == batched
                else:
                    assert statements < batched, (viewer, query)

    # The edge products are there, as each viewer may see them
    staff_listing = answers["staff", 0][0]["products"]["nodes"]
    bare, hidden, shuffled = staff_listing[:3]
    assert (bare["slug"], bare["variants"], bare["images"], bare["category"]) == (
        "bare-product",
        [],
        [],
        None,
    )
    assert hidden["slug"] == "hidden-product" and not hidden["isPublished"]
    assert [v["sku"][:2] for v in shuffled["variants"]] == ["zz", "aa", "mm"]  # by id
    assert [i["url"][-5:] for i in shuffled["images"]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert shuffled["images"][0]["alt"] == 'alt, with (parens) "quotes" and \\ 0'
    assert shuffled["variants"][0]["name"] == 'Size zz "quoted", {brace} (paren)'
    anonymous_listing = answers["anonymous", 0][0]["products"]["nodes"]
    assert [p["slug"] for p in anonymous_listing[:2]] == ["bare-product", "shuffled-product"]
    assert answers["anonymous", 5][0] == {"product": None}
    assert answers["staff", 5][0]["product"]["category"]["name"]


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="relations are embedded on PostgreSQL only")
async def test_a_listing_with_every_relation_is_one_statement(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    body = await _answer(clients["anonymous"], *DOCUMENTS[0])
    assert len(body["data"]["products"]["nodes"]) == 100
    assert body["extensions"]["sql"]["count"] == 2  # the page, then the categories' parents
    detail = await _answer(clients["anonymous"], *DOCUMENTS[6])
    assert detail["extensions"]["sql"]["count"] == 1


def test_relations_are_embedded_on_postgresql_only() -> None:
    selected = frozenset({"variants", "images", "category", "name", "collections"})
    assert q.embeddable("postgresql", selected) == {"variants", "images", "category"}
    assert q.embeddable("sqlite", selected) == frozenset()


LOOKAHEAD: list[tuple[str, dict[str, Any], set[str]]] = [
    ("{ products(first: 2) { nodes { name variants { sku } } } }", {}, {"name", "variants"}),
    (
        "{ products(first: 2) { edges { node { images { url } } } totalCount } }",
        {},
        {"images"},
    ),
    (
        "{ products(first: 2) { ...C } } fragment C on ProductConnection {"
        " edges { ...E } } fragment E on ProductEdge { node { ...P } }"
        " fragment P on Product { category { name } ... on Product { slug } }",
        {},
        {"category", "slug"},
    ),
    (
        "{ products(first: 2) { pageInfo { hasNextPage } nodes { __typename } } }",
        {},
        {"__typename"},
    ),
    (
        "query($s: Boolean!) { products(first: 2) { nodes { v: variants @skip(if: $s) { sku } } } }",
        {"s": True},
        {"variants"},
    ),
    (
        "{ categories(first: 2) { nodes { products(first: 1) { nodes { images { url } } } } } }",
        {},
        {"images"},
    ),
    ('{ product(slug: "x") { id variants { sku } } }', {}, {"id", "variants"}),
]


@pytest.mark.parametrize(("query", "variables", "expected"), LOOKAHEAD)
async def test_the_selection_is_read_through_fragments_and_aliases(
    catalog_db: Database,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    variables: dict[str, Any],
    expected: set[str],
) -> None:
    seen: list[frozenset[str]] = []
    real = q.embeddable

    def spy(dialect: str, selected: frozenset[str]) -> q.Embed:
        seen.append(selected)
        return real(dialect, selected)

    monkeypatch.setattr(q, "embeddable", spy)
    async with make_client(catalog_db) as client:
        for _ in range(2):  # the second answer comes from what was remembered
            await _answer(client, query, variables)
    assert seen and all(names == expected for names in seen), seen


async def test_hostile_ids_and_slugs_still_fail_cleanly(catalog_db: Database) -> None:
    async with make_client(catalog_db) as client:
        for slug in ("x" * 10_000, "'; DROP TABLE products; --", "\u202e\u0000"):
            response = await client.post(
                "/graphql",
                json={"query": "query($s: String!) { product(slug: $s) { variants { sku } } }",
                      "variables": {"s": slug}},
            )  # fmt: skip
            body = response.json()
            assert body.get("data") in ({"product": None}, None), body
            if body.get("errors"):
                assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        body = (
            await client.post(
                "/graphql",
                json={
                    "query": f'{{ product(id: "{gid("Product", 10**12)}") {{ images {{ url }} }} }}'
                },
            )
        ).json()
        assert body["data"] == {"product": None}


MY_ORDERS = """{ me { orders(first: 20) { nodes { number lines { id productName variantName sku
  quantity unitPrice { amount currency } totalPrice { amount } variant { sku } } } } } }"""


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="lines are embedded on PostgreSQL only")
async def test_embedded_order_lines_answer_what_the_batch_answers(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import checkout_flow as f

    from models.orders import queries as orders_q

    stocked = await f.stock_variants(fresh_db, 6)
    async with make_client(fresh_db) as http:
        user_id, me = await f.add_signed_in_customer(fresh_db, http, "lines@example.com")
        await f.place_order(me, [(stocked[0], 1), (stocked[1], 2)], email=None)
        for i in range(4):
            await f.insert_order(
                fresh_db,
                user_id=user_id,
                email="lines@example.com",
                lines=[(stocked[i + 2], 1), (stocked[i], 3)],
            )
        await f.insert_order(fresh_db, user_id=user_id, email="lines@example.com", lines=[])
        embedded = await me(MY_ORDERS)
        monkeypatch.setattr(orders_q, "embeds_lines", lambda dialect, selected: False)
        batched = await me(MY_ORDERS)
    assert embedded["data"] == batched["data"]
    nodes = embedded["data"]["me"]["orders"]["nodes"]
    assert [len(n["lines"]) for n in nodes] == [0, 2, 2, 2, 2, 2]
    assert embedded["extensions"]["sql"]["count"] < batched["extensions"]["sql"]["count"]
