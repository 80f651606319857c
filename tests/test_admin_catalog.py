"""Catalog administration (MANAGE_PRODUCTS) through HTTP: products, variants, stock,
categories, collections, bulk mutations, audit entries, stock events and what the
storefront sees afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import add_user, gid, mint_token
from checkout_flow import ORDER_FIELDS, caller, place_order, stock_variants
from conftest import make_client

from models.accounts.tables import PERMISSIONS
from models.audit.tables import audit_log
from models.catalog.tables import (
    categories,
    collection_products,
    collections,
    images,
    products,
    variants,
)
from models.db import Database
from models.events import VARIANT_STOCK_CHANGED, Event
from models.orders.tables import order_lines

ERRORS = "errors { field code message }"
PRODUCT = """id name slug description isPublished category { id slug } images { url alt }
  variants { id sku name price { amount currency } quantityAvailable }
  priceRange { start { amount } stop { amount } }"""
VARIANT = "id sku name price { amount currency } quantityAvailable product { id }"
CATEGORY = "id name slug description level parent { id }"
COLLECTION = "id name slug description products(first: 50) { nodes { id } }"

PRODUCT_CREATE = f"""mutation($input: ProductCreateInput!) {{
  productCreate(input: $input) {{ product {{ {PRODUCT} }} {ERRORS} }} }}"""
PRODUCT_UPDATE = f"""mutation($id: ID!, $input: ProductUpdateInput!) {{
  productUpdate(id: $id, input: $input) {{ product {{ {PRODUCT} }} {ERRORS} }} }}"""
PRODUCT_DELETE = f"mutation($id: ID!) {{ productDelete(id: $id) {{ deletedId {ERRORS} }} }}"
BULK_CREATE = f"""mutation($inputs: [ProductBulkCreateInput!]!) {{
  productBulkCreate(inputs: $inputs) {{ count products {{ {PRODUCT} }}
    errors {{ index field code message }} }} }}"""
VARIANT_CREATE = f"""mutation($input: ProductVariantCreateInput!) {{
  productVariantCreate(input: $input) {{ productVariant {{ {VARIANT} }} {ERRORS} }} }}"""
VARIANT_UPDATE = f"""mutation($id: ID!, $input: ProductVariantUpdateInput!) {{
  productVariantUpdate(id: $id, input: $input) {{ productVariant {{ {VARIANT} }} {ERRORS} }} }}"""
VARIANT_DELETE = f"""mutation($id: ID!) {{
  productVariantDelete(id: $id) {{ deletedId {ERRORS} }} }}"""
STOCK_UPDATE = f"""mutation($id: ID!, $q: Int!, $e: Int) {{
  variantStockUpdate(id: $id, quantity: $q, expectedQuantity: $e) {{
    productVariant {{ id quantityAvailable }} {ERRORS} }} }}"""
STOCK_BULK = """mutation($updates: [VariantStockUpdateInput!]!) {
  variantStockBulkUpdate(updates: $updates) { count productVariants { id quantityAvailable }
    errors { index field code message } } }"""
CATEGORY_CREATE = f"""mutation($input: CategoryCreateInput!) {{
  categoryCreate(input: $input) {{ category {{ {CATEGORY} }} {ERRORS} }} }}"""
CATEGORY_UPDATE = f"""mutation($id: ID!, $input: CategoryUpdateInput!) {{
  categoryUpdate(id: $id, input: $input) {{ category {{ {CATEGORY} }} {ERRORS} }} }}"""
CATEGORY_DELETE = f"mutation($id: ID!) {{ categoryDelete(id: $id) {{ deletedId {ERRORS} }} }}"
COLLECTION_CREATE = f"""mutation($input: CollectionCreateInput!) {{
  collectionCreate(input: $input) {{ collection {{ {COLLECTION} }} {ERRORS} }} }}"""
COLLECTION_UPDATE = f"""mutation($id: ID!, $input: CollectionUpdateInput!) {{
  collectionUpdate(id: $id, input: $input) {{ collection {{ {COLLECTION} }} {ERRORS} }} }}"""
COLLECTION_DELETE = f"""mutation($id: ID!) {{
  collectionDelete(id: $id) {{ deletedId {ERRORS} }} }}"""
COLLECTION_ADD = f"""mutation($id: ID!, $ids: [ID!]!) {{
  collectionAddProducts(collectionId: $id, productIds: $ids) {{
    collection {{ {COLLECTION} }} {ERRORS} }} }}"""
COLLECTION_REMOVE = f"""mutation($id: ID!, $ids: [ID!]!) {{
  collectionRemoveProducts(collectionId: $id, productIds: $ids) {{
    collection {{ {COLLECTION} }} {ERRORS} }} }}"""
STOREFRONT_PRODUCT = "query($slug: String!) { product(slug: $slug) { id name isPublished } }"
STOREFRONT_SEARCH = """query($ids: [ID!]) { products(first: 10, filter: {ids: $ids}) {
  nodes { id name } } }"""
AUDIT = """query($filter: AuditLogFilter) { auditLog(first: 100, filter: $filter) {
  nodes { action objectType objectId changedFields actorEmail } } }"""


@dataclass
class Admin:
    db: Database
    client: httpx.AsyncClient
    token: str
    events: list[Event]

    async def call(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = ""
    ) -> dict[str, Any]:
        headers = {}
        bearer = self.token if token == "" else token
        if bearer:
            headers["authorization"] = f"Bearer {bearer}"
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body["errors"]
        return body

    async def mutate(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = await self.call(query, variables)
        (payload,) = body["data"].values()
        assert isinstance(payload, dict)
        return payload

    async def ok(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        payload = await self.mutate(query, variables)
        assert payload["errors"] == [], payload["errors"]
        return payload

    def stock_events(self) -> list[list[int]]:
        return [e.payload["variant_ids"] for e in self.events if e.name == VARIANT_STOCK_CHANGED]


@pytest.fixture
async def admin(fresh_db: Database) -> AsyncIterator[Admin]:
    user_id = await add_user(
        fresh_db, "catalog@example.com", is_staff=True, permissions=["MANAGE_PRODUCTS"]
    )
    token = await mint_token(fresh_db, user_id)
    events: list[Event] = []
    remove = fresh_db.events.add_listener(events.append)
    async with make_client(fresh_db) as client:
        yield Admin(fresh_db, client, token, events)
    remove()


async def count(db: Database, table: sa.Table, *where: Any) -> int:
    async with db.read() as conn:
        stmt = sa.select(sa.func.count()).select_from(table).where(*where)
        return int((await conn.execute(stmt)).scalar_one())


async def catalog_counts(db: Database) -> dict[str, int]:
    tables = (products, variants, images, categories, collections, collection_products)
    return {t.name: await count(db, t) for t in tables} | {"audit": await count(db, audit_log)}


def fields(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["errors"]]


async def a_category(admin: Admin, **kw: Any) -> dict[str, Any]:
    payload = await admin.ok(CATEGORY_CREATE, {"input": {"name": "Shoes", **kw}})
    category: dict[str, Any] = payload["category"]
    return category


async def a_product(admin: Admin, **kw: Any) -> dict[str, Any]:
    payload = await admin.ok(PRODUCT_CREATE, {"input": {"name": "Linen Shirt", **kw}})
    product: dict[str, Any] = payload["product"]
    return product


async def a_variant(admin: Admin, product_id: str, **kw: Any) -> dict[str, Any]:
    data = {"productId": product_id, "sku": "SKU-1", "price": "10.00", "quantity": 5, **kw}
    variant: dict[str, Any] = (await admin.ok(VARIANT_CREATE, {"input": data}))["productVariant"]
    return variant


async def audit(admin: Admin, action: str) -> list[dict[str, Any]]:
    """Audit entries of `action` (read as an all-permissions admin)."""
    user_id = await add_user(admin.db, f"auditor-{action}@example.com", is_staff=True,
                             permissions=PERMISSIONS)  # fmt: skip
    token = await mint_token(admin.db, user_id)
    body = await admin.call(AUDIT, {"filter": {"action": action}}, token=token)
    entries: list[dict[str, Any]] = body["data"]["auditLog"]["nodes"]
    return entries


# --------------------------------------------------------------------------- products


async def test_product_create_slugs_images_audit_and_storefront_visibility(admin: Admin) -> None:
    category = await a_category(admin)
    images_in = [
        {"url": "https://cdn.example.com/a.jpg", "alt": "front"},
        {"url": "http://cdn.example.com/b.jpg"},
    ]
    first = await a_product(
        admin,
        description="Soft.\nWashed twice.",
        categoryId=category["id"],
        images=images_in,
    )
    assert first["slug"] == "linen-shirt"
    assert first["isPublished"] is False
    assert first["category"]["id"] == category["id"]
    assert first["images"] == [
        {"url": "https://cdn.example.com/a.jpg", "alt": "front"},
        {"url": "http://cdn.example.com/b.jpg", "alt": ""},
    ]
    assert first["priceRange"]["start"]["amount"] == "0.00"
    second = await a_product(admin)
    third = await a_product(admin)
    assert (second["slug"], third["slug"]) == ("linen-shirt-2", "linen-shirt-3")
    taken = await admin.mutate(PRODUCT_CREATE, {"input": {"name": "X", "slug": "linen-shirt"}})
    assert fields(taken) == [("input.slug", "UNIQUE")] and taken["product"] is None

    [entry] = [e for e in await audit(admin, "productCreate") if e["objectId"] == first["id"]]
    assert entry["objectType"] == "Product" and entry["actorEmail"] == "catalog@example.com"
    assert set(entry["changedFields"]) == {"name", "description", "categoryId", "images"}

    anonymous = caller(admin.client)
    body = await anonymous(STOREFRONT_PRODUCT, {"slug": "linen-shirt"})
    assert body["data"]["product"] is None  # unpublished: invisible to the storefront
    await admin.ok(PRODUCT_UPDATE, {"id": first["id"], "input": {"isPublished": True}})
    body = await anonymous(STOREFRONT_PRODUCT, {"slug": "linen-shirt"})
    assert body["data"]["product"] == {
        "id": first["id"],
        "name": "Linen Shirt",
        "isPublished": True,
    }


async def test_product_update_is_visible_to_the_next_storefront_query(admin: Admin) -> None:
    product = await a_product(admin, isPublished=True, images=[{"url": "https://x.example/1.png"}])
    anonymous = caller(admin.client)
    before = await anonymous(STOREFRONT_SEARCH, {"ids": [product["id"]]})
    assert before["data"]["products"]["nodes"] == [{"id": product["id"], "name": "Linen Shirt"}]

    new_images = [
        {"url": "https://x.example/2.png", "alt": "b"},
        {"url": "https://x.example/3.png"},
    ]
    payload = await admin.ok(
        PRODUCT_UPDATE,
        {
            "id": product["id"],
            "input": {"name": "Hemp Shirt", "slug": "hemp", "images": new_images},
        },
    )
    assert payload["product"]["slug"] == "hemp"
    assert [i["url"] for i in payload["product"]["images"]] == [
        "https://x.example/2.png",
        "https://x.example/3.png",
    ]
    assert await count(admin.db, images) >= 2
    after = await anonymous(STOREFRONT_SEARCH, {"ids": [product["id"]]})
    assert after["data"]["products"]["nodes"] == [{"id": product["id"], "name": "Hemp Shirt"}]
    by_slug = await anonymous(STOREFRONT_PRODUCT, {"slug": "hemp"})
    assert by_slug["data"]["product"]["name"] == "Hemp Shirt"

    # Unpublishing makes it vanish for anonymous users, not for staff.
    await admin.ok(PRODUCT_UPDATE, {"id": product["id"], "input": {"isPublished": False}})
    hidden = await anonymous(STOREFRONT_SEARCH, {"ids": [product["id"]]})
    assert hidden["data"]["products"]["nodes"] == []
    assert (await anonymous(STOREFRONT_PRODUCT, {"slug": "hemp"}))["data"]["product"] is None
    staff = await admin.call(STOREFRONT_PRODUCT, {"slug": "hemp"})
    assert staff["data"]["product"]["isPublished"] is False

    # Same slug as before is fine; the category can be cleared with null; own slug kept.
    category = await a_category(admin)
    moved = await admin.ok(
        PRODUCT_UPDATE,
        {"id": product["id"], "input": {"slug": "hemp", "categoryId": category["id"]}},
    )
    assert moved["product"]["category"]["id"] == category["id"]
    cleared = await admin.ok(PRODUCT_UPDATE, {"id": product["id"], "input": {"categoryId": None}})
    assert cleared["product"]["category"] is None
    [entry, *_] = await audit(admin, "productUpdate")
    assert entry["changedFields"] == ["categoryId"]


async def test_product_update_and_delete_errors(admin: Admin) -> None:
    product = await a_product(admin)
    other = await a_product(admin, name="Other")
    missing = gid("Product", 999_999)
    cases: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
        (PRODUCT_UPDATE, {"id": missing, "input": {"name": "A"}}, [("id", "NOT_FOUND")]),
        (PRODUCT_UPDATE, {"id": "nope", "input": {"name": "A"}}, [("id", "INVALID")]),
        (PRODUCT_UPDATE, {"id": gid("Category", 1), "input": {}}, [("id", "INVALID")]),
        (
            PRODUCT_UPDATE,
            {"id": product["id"], "input": {"slug": other["slug"]}},
            [("input.slug", "UNIQUE")],
        ),
        (
            PRODUCT_UPDATE,
            {"id": product["id"], "input": {"name": " "}},
            [("input.name", "REQUIRED")],
        ),
        (PRODUCT_DELETE, {"id": missing}, [("id", "NOT_FOUND")]),
        (PRODUCT_DELETE, {"id": gid("ProductVariant", 1)}, [("id", "INVALID")]),
    ]
    before = await catalog_counts(admin.db)
    for query, variables, expected in cases:
        payload = await admin.mutate(query, variables)
        assert fields(payload) == expected, (variables, payload)
    assert await catalog_counts(admin.db) == before
    deleted = await admin.ok(PRODUCT_DELETE, {"id": product["id"]})
    assert deleted["deletedId"] == product["id"]
    assert await count(admin.db, products, products.c.id == _key(product["id"])) == 0


LONG = "x" * 10_000
BAD_PRODUCT_INPUTS: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
    ({"name": ""}, [("input.name", "REQUIRED")]),
    ({"name": "   "}, [("input.name", "REQUIRED")]),
    ({"name": LONG}, [("input.name", "INVALID")]),
    ({"name": "a\x00b"}, [("input.name", "INVALID")]),
    ({"name": "tab\there"}, [("input.name", "INVALID")]),
    ({"name": "ok", "description": "x" * 10_001}, [("input.description", "INVALID")]),
    ({"name": "ok", "description": "bell\x07"}, [("input.description", "INVALID")]),
    ({"name": "ok", "slug": "Not A Slug"}, [("input.slug", "INVALID")]),
    ({"name": "ok", "slug": "a" * 256}, [("input.slug", "INVALID")]),
    ({"name": "ok", "slug": "x'; DROP TABLE products; --"}, [("input.slug", "INVALID")]),
    ({"name": "ok", "images": [{"url": "javascript:alert(1)"}]}, [("input.images.0.url", "INVALID")]),
    ({"name": "ok", "images": [{"url": "not a url"}]}, [("input.images.0.url", "INVALID")]),
    (
        {"name": "ok", "images": [{"url": "https://a.example/1"}, {"url": "ftp://a.example/f"}]},
        [("input.images.1.url", "INVALID")],
    ),
    ({"name": "ok", "images": [{"url": "https://a.example/" + "a" * 2048}]}, [("input.images.0.url", "INVALID")]),
    ({"name": "ok", "images": [{"url": "https://a.example/1", "alt": "a" * 251}]}, [("input.images.0.alt", "INVALID")]),
    ({"name": "ok", "images": [{"url": "https://a.example/1"}] * 51}, [("input.images", "LIMIT_EXCEEDED")]),
    ({"name": "ok", "categoryId": gid("Category", 999_999)}, [("input.categoryId", "NOT_FOUND")]),
    ({"name": "ok", "categoryId": gid("Product", 1)}, [("input.categoryId", "INVALID")]),
    ({"name": "ok", "categoryId": "garbage"}, [("input.categoryId", "INVALID")]),
    ({"name": "", "slug": "BAD", "categoryId": "x"}, [("input.name", "REQUIRED"), ("input.slug", "INVALID"), ("input.categoryId", "INVALID")]),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), BAD_PRODUCT_INPUTS)
async def test_bad_product_input_is_a_precise_payload_error_and_writes_nothing(
    admin: Admin, data: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    before = await catalog_counts(admin.db)
    payload = await admin.mutate(PRODUCT_CREATE, {"input": data})
    assert fields(payload) == expected
    assert payload["product"] is None
    assert await catalog_counts(admin.db) == before
    assert admin.events == []


async def test_hostile_but_valid_text_is_stored_verbatim(admin: Admin) -> None:
    name = "Robert'); DROP TABLE products;-- \u00e9\u4e2d\U0001f600"
    product = await a_product(admin, name=name, description="line 1\r\n\tline 2 <script>")
    assert product["name"] == name
    assert product["description"] == "line 1\r\n\tline 2 <script>"
    assert product["slug"] == "robert-drop-table-products-e"
    cjk = await a_product(admin, name="\u4e2d\u6587")
    assert cjk["slug"] == "product"
    body = await admin.call(STOREFRONT_PRODUCT, {"slug": product["slug"]})
    assert body["data"]["product"]["name"] == name


async def test_lone_surrogate_is_refused_without_a_500(admin: Admin) -> None:
    before = await catalog_counts(admin.db)
    raw = '{"query": "mutation($i: ProductCreateInput!) { productCreate(input: $i) { errors { code } } }",'
    raw += ' "variables": {"i": {"name": "a\\ud800"}}}'
    response = await admin.client.post(
        "/graphql",
        content=raw,
        headers={"content-type": "application/json", "authorization": f"Bearer {admin.token}"},
    )
    assert response.status_code in (200, 400), response.text
    assert await catalog_counts(admin.db) == before


async def test_customers_cannot_create_products(admin: Admin) -> None:
    customer = await mint_token(admin.db, await add_user(admin.db, "c@example.com"))
    response = await admin.client.post(
        "/graphql",
        json={"query": PRODUCT_CREATE, "variables": {"input": {"name": "x"}}},
        headers={"authorization": f"Bearer {customer}"},
    )
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


# --------------------------------------------------------------------------- variants


async def test_variants_keep_the_price_range_and_publish_stock_events(admin: Admin) -> None:
    product = await a_product(admin)
    cheap = await a_variant(admin, product["id"], sku="S-1", price="9.50", quantity=3)
    assert cheap["price"] == {"amount": "9.50", "currency": "USD"}
    assert cheap["quantityAvailable"] == 3 and cheap["product"]["id"] == product["id"]
    assert admin.stock_events() == [[int(_key(cheap["id"]))]]
    dear = await a_variant(admin, product["id"], sku="S-2", price="120", quantity=None)
    assert dear["quantityAvailable"] == 0
    assert len(admin.stock_events()) == 1  # no quantity given: no stock event

    async def price_range() -> tuple[str, str]:
        body = await admin.call(STOREFRONT_PRODUCT.replace("isPublished", "priceRange { start { amount } stop { amount } }"), {"slug": product["slug"]})  # fmt: skip
        found = body["data"]["product"]["priceRange"]
        return found["start"]["amount"], found["stop"]["amount"]

    assert await price_range() == ("9.50", "120.00")
    updated = await admin.ok(
        VARIANT_UPDATE, {"id": dear["id"], "input": {"price": "7.25", "name": "Big"}}
    )
    assert updated["productVariant"]["price"]["amount"] == "7.25"
    assert updated["productVariant"]["name"] == "Big"
    assert await price_range() == ("7.25", "9.50")
    assert (await admin.ok(VARIANT_DELETE, {"id": dear["id"]}))["deletedId"] == dear["id"]
    assert await price_range() == ("9.50", "9.50")
    await admin.ok(VARIANT_DELETE, {"id": cheap["id"]})
    assert await price_range() == ("0.00", "0.00")
    assert len(await audit(admin, "productVariantDelete")) == 2
    [create_entry, *_] = await audit(admin, "productVariantCreate")
    assert set(create_entry["changedFields"]) == {"productId", "sku", "price"}


def _key(global_id: str) -> int:
    import base64

    return int(base64.b64decode(global_id).decode().split(":")[1])


BAD_VARIANTS: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
    ({"price": "-1.00"}, [("input.price", "INVALID")]),
    ({"price": "1.001"}, [("input.price", "INVALID")]),
    ({"quantity": -1}, [("input.quantity", "INVALID")]),
    ({"sku": ""}, [("input.sku", "REQUIRED")]),
    ({"sku": "has space"}, [("input.sku", "INVALID")]),
    ({"sku": "x" * 65}, [("input.sku", "INVALID")]),
    ({"sku": "nul\x00"}, [("input.sku", "INVALID")]),
    ({"sku": "TAKEN"}, [("input.sku", "UNIQUE")]),
    ({"name": "n" * 251}, [("input.name", "INVALID")]),
    ({"productId": gid("Product", 999_999)}, [("input.productId", "NOT_FOUND")]),
    ({"productId": gid("Category", 1)}, [("input.productId", "INVALID")]),
    ({"price": "-5", "quantity": -2, "sku": ""}, [("input.sku", "REQUIRED"), ("input.price", "INVALID"), ("input.quantity", "INVALID")]),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), BAD_VARIANTS)
async def test_bad_variant_input_is_refused_and_writes_nothing(
    admin: Admin, data: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    product = await a_product(admin)
    await a_variant(admin, product["id"], sku="TAKEN")
    admin.events.clear()
    before = await catalog_counts(admin.db)
    variables = {"productId": product["id"], "sku": "NEW-1", "price": "1.00", "quantity": 1, **data}
    payload = await admin.mutate(VARIANT_CREATE, {"input": variables})
    assert fields(payload) == expected
    assert await catalog_counts(admin.db) == before
    assert admin.events == []


async def test_variant_update_errors(admin: Admin) -> None:
    product = await a_product(admin)
    variant = await a_variant(admin, product["id"], sku="A-1")
    await a_variant(admin, product["id"], sku="B-1")
    before = await catalog_counts(admin.db)
    for data, expected in [
        ({"sku": "B-1"}, [("input.sku", "UNIQUE")]),
        ({"price": "0.005"}, [("input.price", "INVALID")]),
        ({"price": "-0.01"}, [("input.price", "INVALID")]),
        ({"sku": " "}, [("input.sku", "REQUIRED")]),
    ]:
        payload = await admin.mutate(VARIANT_UPDATE, {"id": variant["id"], "input": data})
        assert fields(payload) == expected, data
    missing = await admin.mutate(
        VARIANT_UPDATE, {"id": gid("ProductVariant", 999_999), "input": {"name": "x"}}
    )
    assert fields(missing) == [("id", "NOT_FOUND")]
    gone = await admin.mutate(VARIANT_DELETE, {"id": gid("ProductVariant", 999_999)})
    assert fields(gone) == [("id", "NOT_FOUND")]
    assert await catalog_counts(admin.db) == before
    same = await admin.ok(VARIANT_UPDATE, {"id": variant["id"], "input": {"sku": "A-1"}})
    assert same["productVariant"]["sku"] == "A-1"


# --------------------------------------------------------------------------- stock


async def test_stock_update_compare_and_set(admin: Admin) -> None:
    product = await a_product(admin)
    variant = await a_variant(admin, product["id"], quantity=5)
    admin.events.clear()
    ok = await admin.ok(STOCK_UPDATE, {"id": variant["id"], "q": 8, "e": 5})
    assert ok["productVariant"]["quantityAvailable"] == 8
    assert admin.stock_events() == [[_key(variant["id"])]]
    stale = await admin.mutate(STOCK_UPDATE, {"id": variant["id"], "q": 1, "e": 5})
    assert fields(stale) == [("expectedQuantity", "CONFLICT")]
    assert stale["productVariant"] is None
    assert len(admin.events) == 1  # none for the refused change
    unconditional = await admin.ok(STOCK_UPDATE, {"id": variant["id"], "q": 0})
    assert unconditional["productVariant"]["quantityAvailable"] == 0
    for variables, expected in [
        ({"id": variant["id"], "q": -1}, [("quantity", "INVALID")]),
        ({"id": variant["id"], "q": 1, "e": -1}, [("expectedQuantity", "INVALID")]),
        ({"id": gid("ProductVariant", 999_999), "q": 1}, [("id", "NOT_FOUND")]),
        ({"id": product["id"], "q": 1}, [("id", "INVALID")]),
    ]:
        assert fields(await admin.mutate(STOCK_UPDATE, variables)) == expected
    async with admin.db.read() as conn:
        stored = await conn.execute(
            sa.select(variants.c.quantity).where(variants.c.id == _key(variant["id"]))
        )
        assert stored.scalar_one() == 0
    assert len(admin.stock_events()) == 2
    assert len(await audit(admin, "variantStockUpdate")) == 2


async def test_stock_bulk_update_is_all_or_nothing(admin: Admin) -> None:
    ids = [gid("ProductVariant", v) for v in await stock_variants(admin.db, 3, quantity=10)]
    ok = await admin.ok(
        STOCK_BULK,
        {"updates": [{"id": ids[0], "quantity": 1, "expectedQuantity": 10},
                     {"id": ids[1], "quantity": 2}, {"id": ids[2], "quantity": 3}]},
    )  # fmt: skip
    assert ok["count"] == 3
    assert [v["quantityAvailable"] for v in ok["productVariants"]] == [1, 2, 3]
    assert admin.stock_events() == [[_key(i) for i in ids]]
    conflict = await admin.mutate(
        STOCK_BULK,
        {"updates": [{"id": ids[0], "quantity": 50, "expectedQuantity": 1},
                     {"id": ids[1], "quantity": 50, "expectedQuantity": 99},
                     {"id": ids[2], "quantity": 50}]},
    )  # fmt: skip
    assert [(e["index"], e["field"], e["code"]) for e in conflict["errors"]] == [
        (1, "updates.1.expectedQuantity", "CONFLICT")
    ]
    assert conflict["count"] == 0
    async with admin.db.read() as conn:
        rows = await conn.execute(sa.select(variants.c.quantity).where(variants.c.id.in_([_key(i) for i in ids])).order_by(variants.c.id))  # fmt: skip
        assert [r[0] for r in rows] == [1, 2, 3]
    assert len(admin.events) == 1
    for updates, expected in [
        ([{"id": ids[0], "quantity": 1}, {"id": ids[0], "quantity": 2}], [(1, "updates.1.id", "INVALID")]),
        ([{"id": ids[0], "quantity": -1}], [(0, "updates.0.quantity", "INVALID")]),
        ([{"id": gid("ProductVariant", 999_999), "quantity": 1}], [(0, "updates.0.id", "NOT_FOUND")]),
        ([{"id": ids[0], "quantity": 1}] * 101, [(None, "updates", "LIMIT_EXCEEDED")]),
    ]:  # fmt: skip
        payload = await admin.mutate(STOCK_BULK, {"updates": updates})
        assert [(e["index"], e["field"], e["code"]) for e in payload["errors"]] == expected
    assert len(admin.events) == 1


# --------------------------------------------------------------------------- bulk create


def bulk_item(n: int, **kw: Any) -> dict[str, Any]:
    return {
        "name": f"Bulk Tee {n}",
        "isPublished": True,
        "variants": [
            {"sku": f"BT-{n}-S", "price": "10.00", "quantity": 2},
            {"sku": f"BT-{n}-M", "name": "M", "price": "12.50"},
        ],
        **kw,
    }


async def test_product_bulk_create_writes_everything_in_constant_statements(
    admin: Admin,
) -> None:
    category = await a_category(admin)
    small = await admin.call(BULK_CREATE, {"inputs": [bulk_item(0, categoryId=category["id"])]})
    big_inputs = [
        bulk_item(n, images=[{"url": f"https://i.example/{n}.jpg"}]) for n in range(1, 51)
    ]
    big = await admin.call(BULK_CREATE, {"inputs": big_inputs})
    payload = big["data"]["productBulkCreate"]
    assert payload["errors"] == [] and payload["count"] == 50
    first = payload["products"][0]
    assert first["slug"] == "bulk-tee-1" and first["isPublished"] is True
    assert [v["sku"] for v in first["variants"]] == ["BT-1-S", "BT-1-M"]
    assert first["priceRange"] == {"start": {"amount": "10.00"}, "stop": {"amount": "12.50"}}
    assert first["images"] == [{"url": "https://i.example/1.jpg", "alt": ""}]
    assert small["data"]["productBulkCreate"]["products"][0]["category"]["id"] == category["id"]
    counts = (small["extensions"]["sql"]["count"], big["extensions"]["sql"]["count"])
    assert counts[0] == counts[1], counts
    assert len(await audit(admin, "productBulkCreate")) == 51
    # Every created variant is named in a stock event (published after the commit).
    assert sum(len(ids) for ids in admin.stock_events()) == 102
    same_names = await admin.ok(BULK_CREATE, {"inputs": [{"name": "Twin"}, {"name": "Twin"}, {"name": "Y", "slug": "twin-2"}]})  # fmt: skip
    assert [p["slug"] for p in same_names["products"]] == ["twin", "twin-3", "twin-2"]


async def test_product_bulk_create_is_all_or_nothing_with_indexed_errors(admin: Admin) -> None:
    product = await a_product(admin)
    await a_variant(admin, product["id"], sku="EXISTING")
    admin.events.clear()
    before = await catalog_counts(admin.db)
    inputs = [
        bulk_item(0),
        bulk_item(1, slug=product["slug"]),
        bulk_item(2, variants=[{"sku": "EXISTING", "price": "1"}]),
        bulk_item(3, variants=[{"sku": "BT-0-S", "price": "1"}]),  # duplicate within the batch
        bulk_item(4, slug="dup"),
        bulk_item(5, slug="dup"),
        bulk_item(6, categoryId=gid("Category", 999_999)),
    ]
    payload = await admin.mutate(BULK_CREATE, {"inputs": inputs})
    assert [(e["index"], e["field"], e["code"]) for e in payload["errors"]] == [
        (1, "inputs.1.slug", "UNIQUE"),
        (2, "inputs.2.variants.0.sku", "UNIQUE"),
        (3, "inputs.3.variants.0.sku", "UNIQUE"),
        (5, "inputs.5.slug", "UNIQUE"),
        (6, "inputs.6.categoryId", "NOT_FOUND"),
    ]
    assert payload["count"] == 0 and payload["products"] == []
    assert await catalog_counts(admin.db) == before
    invalid = [
        bulk_item(0),
        {"name": ""},
        bulk_item(2, variants=[{"sku": "ok-1", "price": "-1"}, {"sku": "", "price": "1.999", "quantity": -3}]),
        {"name": "x", "images": [{"url": "javascript:x"}]},
    ]  # fmt: skip
    payload = await admin.mutate(BULK_CREATE, {"inputs": invalid})
    assert [(e["index"], e["field"], e["code"]) for e in payload["errors"]] == [
        (1, "inputs.1.name", "REQUIRED"),
        (2, "inputs.2.variants.0.price", "INVALID"),
        (2, "inputs.2.variants.1.sku", "REQUIRED"),
        (2, "inputs.2.variants.1.price", "INVALID"),
        (2, "inputs.2.variants.1.quantity", "INVALID"),
        (3, "inputs.3.images.0.url", "INVALID"),
    ]
    too_many = await admin.mutate(BULK_CREATE, {"inputs": [{"name": "x"}] * 101})
    assert [(e["index"], e["field"], e["code"]) for e in too_many["errors"]] == [
        (None, "inputs", "LIMIT_EXCEEDED")
    ]
    assert await catalog_counts(admin.db) == before
    assert admin.events == []


# --------------------------------------------------------------------------- orders survive


async def test_deleting_variants_and_products_keeps_orders_readable(admin: Admin) -> None:
    [v1, v2] = await stock_variants(admin.db, 2, quantity=20)
    order = await place_order(caller(admin.client), [(v1, 1), (v2, 2)])
    lines_before = {line["sku"]: line for line in order["lines"]}
    orders_token = await mint_token(
        admin.db, await add_user(admin.db, "orders@example.com", is_staff=True, permissions=PERMISSIONS)
    )  # fmt: skip
    assert fields(await admin.ok(VARIANT_DELETE, {"id": gid("ProductVariant", v1)})) == []
    async with admin.db.read() as conn:
        product_of_v2 = (await conn.execute(sa.select(variants.c.product_id).where(variants.c.id == v2))).scalar_one()  # fmt: skip
    assert fields(await admin.ok(PRODUCT_DELETE, {"id": gid("Product", product_of_v2)})) == []
    assert await count(admin.db, variants, variants.c.id.in_([v1, v2])) == 0
    assert await count(admin.db, order_lines, order_lines.c.variant_id.is_(None)) == 2
    body = await admin.call(f'query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}', {"id": order["id"]}, token=orders_token)  # fmt: skip
    read = body["data"]["order"]
    assert read["total"] == order["total"]
    for line in read["lines"]:
        assert line["variant"] is None
        before = lines_before[line["sku"]]
        assert (line["productName"], line["unitPrice"], line["quantity"]) == (
            before["productName"], before["unitPrice"], before["quantity"]
        )  # fmt: skip


# --------------------------------------------------------------------------- categories


async def test_category_tree_moves_keep_levels_and_refuse_cycles(admin: Admin) -> None:
    root = await a_category(admin, name="Root Shop")
    child = await a_category(admin, name="Child", parentId=root["id"])
    grandchild = await a_category(admin, name="Grandchild", parentId=child["id"])
    assert (root["level"], child["level"], grandchild["level"]) == (0, 1, 2)
    assert child["slug"] == "child" and grandchild["parent"]["id"] == child["id"]
    dup = await a_category(admin, name="Child")
    assert dup["slug"] == "child-2"
    for target in (child["id"], grandchild["id"]):
        payload = await admin.mutate(
            CATEGORY_UPDATE, {"id": child["id"], "input": {"parentId": target}}
        )
        assert fields(payload) == [("input.parentId", "INVALID")]
    # Not under a deeper descendant either.
    other = await a_category(admin, name="Deep", parentId=grandchild["id"])
    cycle = await admin.mutate(
        CATEGORY_UPDATE, {"id": child["id"], "input": {"parentId": other["id"]}}
    )
    assert fields(cycle) == [("input.parentId", "INVALID")]
    under_dup = await admin.ok(
        CATEGORY_UPDATE, {"id": grandchild["id"], "input": {"parentId": dup["id"]}}
    )
    assert under_dup["category"]["level"] == 1
    top = await admin.ok(
        CATEGORY_UPDATE, {"id": dup["id"], "input": {"parentId": root["id"], "name": "Renamed"}}
    )
    assert top["category"]["level"] == 1 and top["category"]["name"] == "Renamed"

    async def level(category_id: str) -> int:
        async with admin.db.read() as conn:
            stmt = sa.select(categories.c.level).where(categories.c.id == _key(category_id))
            return int((await conn.execute(stmt)).scalar_one())

    assert [await level(c) for c in (grandchild["id"], other["id"])] == [2, 3]
    back = await admin.ok(CATEGORY_UPDATE, {"id": dup["id"], "input": {"parentId": None}})
    assert back["category"]["level"] == 0 and back["category"]["parent"] is None
    assert [await level(c) for c in (grandchild["id"], other["id"])] == [1, 2]
    for data, expected in [
        ({"name": ""}, [("input.name", "REQUIRED")]),
        ({"slug": "child"}, [("input.slug", "UNIQUE")]),
        ({"parentId": gid("Category", 999_999)}, [("input.parentId", "NOT_FOUND")]),
        ({"parentId": gid("Product", 1)}, [("input.parentId", "INVALID")]),
    ]:
        payload = await admin.mutate(CATEGORY_UPDATE, {"id": dup["id"], "input": data})
        assert fields(payload) == expected, data
    taken = await admin.mutate(CATEGORY_CREATE, {"input": {"name": "Child", "slug": "child"}})
    assert fields(taken) == [("input.slug", "UNIQUE")]
    product = await a_product(admin, categoryId=grandchild["id"])
    deleted = await admin.ok(CATEGORY_DELETE, {"id": dup["id"]})
    assert deleted["deletedId"] == dup["id"]
    assert await count(admin.db, categories, categories.c.id.in_([_key(grandchild["id"]), _key(other["id"])])) == 0  # fmt: skip
    async with admin.db.read() as conn:
        stmt = sa.select(products.c.category_id).where(products.c.id == _key(product["id"]))
        assert (await conn.execute(stmt)).scalar_one() is None
    assert fields(await admin.mutate(CATEGORY_DELETE, {"id": dup["id"]})) == [("id", "NOT_FOUND")]


# --------------------------------------------------------------------------- collections


async def test_collections_add_and_remove_products_idempotently(admin: Admin) -> None:
    created = await admin.ok(
        COLLECTION_CREATE, {"input": {"name": "Summer Picks", "description": "Hot"}}
    )
    collection = created["collection"]
    assert collection["slug"] == "summer-picks" and collection["products"]["nodes"] == []
    first, second = (
        await a_product(admin, isPublished=True),
        await a_product(admin, isPublished=True),
    )
    ids = [first["id"], second["id"]]
    added = await admin.ok(COLLECTION_ADD, {"id": collection["id"], "ids": ids})
    assert {p["id"] for p in added["collection"]["products"]["nodes"]} == set(ids)
    again = await admin.ok(COLLECTION_ADD, {"id": collection["id"], "ids": [*ids, ids[0]]})
    assert len(again["collection"]["products"]["nodes"]) == 2
    assert await count(admin.db, collection_products, collection_products.c.collection_id == _key(collection["id"])) == 2  # fmt: skip
    removed = await admin.ok(COLLECTION_REMOVE, {"id": collection["id"], "ids": [ids[0]]})
    assert [p["id"] for p in removed["collection"]["products"]["nodes"]] == [ids[1]]
    before = await catalog_counts(admin.db)
    for query, variables, expected in [
        (COLLECTION_ADD, {"id": collection["id"], "ids": [ids[0], gid("Product", 999_999)]}, [("productIds.1", "NOT_FOUND")]),
        (COLLECTION_ADD, {"id": collection["id"], "ids": ["bad"]}, [("productIds.0", "INVALID")]),
        (COLLECTION_ADD, {"id": gid("Collection", 999_999), "ids": ids}, [("collectionId", "NOT_FOUND")]),
        (COLLECTION_ADD, {"id": ids[0], "ids": ids}, [("collectionId", "INVALID")]),
        (COLLECTION_ADD, {"id": collection["id"], "ids": [ids[0]] * 101}, [("productIds", "LIMIT_EXCEEDED")]),
        (COLLECTION_CREATE, {"input": {"name": "X", "slug": "summer-picks"}}, [("input.slug", "UNIQUE")]),
        (COLLECTION_CREATE, {"input": {"name": "\x01"}}, [("input.name", "INVALID")]),
        (COLLECTION_UPDATE, {"id": gid("Collection", 999_999), "input": {"name": "x"}}, [("id", "NOT_FOUND")]),
        (COLLECTION_DELETE, {"id": gid("Collection", 999_999)}, [("id", "NOT_FOUND")]),
    ]:  # fmt: skip
        assert fields(await admin.mutate(query, variables)) == expected, variables
    assert await catalog_counts(admin.db) == before
    renamed = await admin.ok(COLLECTION_UPDATE, {"id": collection["id"], "input": {"name": "Winter", "slug": "winter"}})  # fmt: skip
    assert renamed["collection"]["slug"] == "winter"
    body = await caller(admin.client)('{ collection(slug: "winter") { name } }')
    assert body["data"]["collection"] == {"name": "Winter"}
    assert (await admin.ok(COLLECTION_DELETE, {"id": collection["id"]}))["deletedId"] == collection[
        "id"
    ]
    assert await count(admin.db, products, products.c.id.in_([_key(i) for i in ids])) == 2
    assert len(await audit(admin, "collectionAddProducts")) == 2
