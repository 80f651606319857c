"""Promo codes (MANAGE_DISCOUNTS) and shipping methods (MANAGE_SHIPPING) through HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import add_user, mint_token
from checkout_flow import (
    caller,
    gid,
    place_order,
    read_checkout,
    ready_checkout,
    stock_variants,
)
from conftest import make_client

from models.accounts.tables import PERMISSIONS
from models.audit.tables import audit_log
from models.checkout.tables import promo_codes, promo_redemptions, shipping_methods
from models.db import Database
from models.orders.tables import orders

ERRORS = "errors { field code message }"
PROMO = """id code kind value currency minSubtotal { amount currency } startsAt endsAt
  usageLimit usedCount oncePerCustomer createdAt updatedAt"""
PROMO_CREATE = f"""mutation($input: PromoCodeCreateInput!) {{
  promoCodeCreate(input: $input) {{ promoCode {{ {PROMO} }} {ERRORS} }} }}"""
PROMO_UPDATE = f"""mutation($id: ID!, $input: PromoCodeUpdateInput!) {{
  promoCodeUpdate(id: $id, input: $input) {{ promoCode {{ {PROMO} }} {ERRORS} }} }}"""
PROMO_DELETE = f"""mutation($id: ID!) {{
  promoCodeDelete(id: $id) {{ deletedId promoCode {{ code }} {ERRORS} }} }}"""
PROMO_LIST = """query($first: Int, $after: String, $filter: PromoCodeFilter) {
  promoCodes(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor } nodes { code kind value usedCount } } }"""
METHOD = "id name price { amount currency } countries freeAbove { amount }"
METHOD_CREATE = f"""mutation($input: ShippingMethodCreateInput!) {{
  shippingMethodCreate(input: $input) {{ shippingMethod {{ {METHOD} }} {ERRORS} }} }}"""
METHOD_UPDATE = f"""mutation($id: ID!, $input: ShippingMethodUpdateInput!) {{
  shippingMethodUpdate(id: $id, input: $input) {{ shippingMethod {{ {METHOD} }} {ERRORS} }} }}"""
METHOD_DELETE = f"""mutation($id: ID!) {{
  shippingMethodDelete(id: $id) {{ deletedId shippingMethod {{ name }} {ERRORS} }} }}"""


@dataclass
class Shop:
    db: Database
    client: httpx.AsyncClient
    admin: str

    async def call(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/graphql",
            content=json.dumps({"query": query, "variables": variables}),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {token or self.admin}",
            },
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def mutate(self, query: str, **variables: Any) -> dict[str, Any]:
        body = await self.call(query, variables)
        assert "errors" not in body, body["errors"]
        (payload,) = body["data"].values()
        assert isinstance(payload, dict)
        return payload


@pytest.fixture
async def shop(fresh_db: Database) -> AsyncIterator[Shop]:
    admin_id = await add_user(fresh_db, "admin@example.com", is_staff=True, permissions=PERMISSIONS)
    async with make_client(fresh_db) as client:
        yield Shop(fresh_db, client, await mint_token(fresh_db, admin_id))


def errors(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["errors"]]


async def rows(db: Database, table: sa.Table) -> list[tuple[Any, ...]]:
    async with db.read() as conn:
        return [tuple(r) for r in (await conn.execute(sa.select(table).order_by("id"))).all()]


async def audit_actions(db: Database) -> list[tuple[str, str]]:
    async with db.read() as conn:
        result = await conn.execute(
            sa.select(audit_log.c.action, audit_log.c.changed_fields).order_by(audit_log.c.id)
        )
        return [(r[0], r[1]) for r in result.all()]


def promo_input(**overrides: Any) -> dict[str, Any]:
    return {"code": "spring-sale", "kind": "PERCENTAGE", "value": "12.5", **overrides}


# ------------------------------------------------------------------------------ promo codes


async def test_a_created_code_applies_at_checkout_case_insensitively(shop: Shop) -> None:
    payload = await shop.mutate(
        PROMO_CREATE,
        input=promo_input(minSubtotal="10.00", usageLimit=5, endsAt="2999-01-01T00:00:00+00:00"),
    )
    assert payload["errors"] == []
    promo = payload["promoCode"]
    assert promo["code"] == "SPRING-SALE"
    assert (promo["kind"], promo["value"], promo["currency"]) == ("PERCENTAGE", "12.50", "USD")
    assert promo["minSubtotal"] == {"amount": "10.00", "currency": "USD"}
    assert (promo["usageLimit"], promo["usedCount"], promo["oncePerCustomer"]) == (5, 0, False)
    assert promo["startsAt"] is None and promo["endsAt"].startswith("2999-01-01T00:00:00")
    assert await audit_actions(shop.db) == [
        ("promoCodeCreate", '["code","endsAt","kind","minSubtotal","usageLimit","value"]')
    ]

    (v1,) = await stock_variants(shop.db, 1, prices=[8000])
    checkout = await ready_checkout(caller(shop.client), [(v1, 1)], promo="Spring-Sale")
    assert checkout["promoCode"] == "SPRING-SALE"
    assert checkout["discount"]["amount"] == "10.00"


async def test_fixed_codes_and_node_ids(shop: Shop) -> None:
    payload = await shop.mutate(
        PROMO_CREATE,
        input={"code": "five_off", "kind": "FIXED", "value": "5", "oncePerCustomer": True},
    )
    assert payload["errors"] == []
    assert payload["promoCode"]["value"] == "5.00"
    assert payload["promoCode"]["oncePerCustomer"] is True
    assert payload["promoCode"]["id"].startswith("UHJvbW9Db2Rl")  # "PromoCode"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"code": "welcome10"}, [("input.code", "UNIQUE")]),  # seeded, in upper case
        ({"code": ""}, [("input.code", "REQUIRED")]),
        ({"code": "  "}, [("input.code", "REQUIRED")]),
        ({"code": "two words"}, [("input.code", "INVALID")]),
        ({"code": "X" * 41}, [("input.code", "INVALID")]),
        ({"code": "A" * 10_000}, [("input.code", "INVALID")]),
        ({"code": "NUL\x00"}, [("input.code", "INVALID")]),
        ({"code": "ÉTÉ"}, [("input.code", "INVALID")]),
        ({"value": "0"}, [("input.value", "INVALID")]),
        ({"value": "-5"}, [("input.value", "INVALID")]),
        ({"value": "100.01"}, [("input.value", "INVALID")]),
        ({"value": "12.345"}, [("input.value", "INVALID")]),
        ({"kind": "FIXED", "value": "5.001"}, [("input.value", "INVALID")]),
        ({"kind": "FIXED", "value": "0"}, [("input.value", "INVALID")]),
        ({"minSubtotal": "-1"}, [("input.minSubtotal", "INVALID")]),
        ({"minSubtotal": "0.005"}, [("input.minSubtotal", "INVALID")]),
        ({"usageLimit": 0}, [("input.usageLimit", "INVALID")]),
        ({"usageLimit": -3}, [("input.usageLimit", "INVALID")]),
        (
            {"startsAt": "2030-01-02T00:00:00+00:00", "endsAt": "2030-01-01T00:00:00+00:00"},
            [("input.endsAt", "INVALID")],
        ),
        (
            {"startsAt": "2030-01-01T00:00:00+00:00", "endsAt": "2030-01-01T00:00:00+00:00"},
            [("input.endsAt", "INVALID")],
        ),
        ({"startsAt": "2030-01-01T00:00:00"}, [("input.startsAt", "INVALID")]),
        (
            {"code": "", "value": "0", "usageLimit": 0},
            [
                ("input.code", "REQUIRED"),
                ("input.value", "INVALID"),
                ("input.usageLimit", "INVALID"),
            ],
        ),
    ],
)
async def test_bad_promo_input_writes_nothing(
    shop: Shop, overrides: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    before = await rows(shop.db, promo_codes)
    payload = await shop.mutate(PROMO_CREATE, input=promo_input(**overrides))
    assert errors(payload) == expected, payload
    assert payload["promoCode"] is None
    assert await rows(shop.db, promo_codes) == before
    assert await audit_actions(shop.db) == []


async def test_updating_a_code(shop: Shop) -> None:
    created = (await shop.mutate(PROMO_CREATE, input=promo_input(usageLimit=10)))["promoCode"]
    (v1,) = await stock_variants(shop.db, 1, prices=[8000])
    open_checkout = await ready_checkout(caller(shop.client), [(v1, 1)], promo="SPRING-SALE")

    payload = await shop.mutate(
        PROMO_UPDATE,
        id=created["id"],
        input={"code": "Summer-Sale", "value": "20", "endsAt": "2999-01-01T00:00:00Z"},
    )
    assert payload["errors"] == []
    promo = payload["promoCode"]
    assert (promo["code"], promo["value"], promo["usageLimit"]) == ("SUMMER-SALE", "20.00", 10)
    # The open checkout follows the renamed code.
    found = await read_checkout(caller(shop.client), open_checkout["id"])
    assert found is not None and found["promoCode"] == "SUMMER-SALE"
    assert found["discount"]["amount"] == "16.00"

    payload = await shop.mutate(
        PROMO_UPDATE, id=created["id"], input={"endsAt": None, "usageLimit": None}
    )
    assert payload["errors"] == []
    assert payload["promoCode"]["endsAt"] is None and payload["promoCode"]["usageLimit"] is None

    async with shop.db.transaction() as conn:
        await conn.execute(promo_codes.update().values(used_count=3))
    before = await rows(shop.db, promo_codes)
    bad = [
        ({"usageLimit": 2}, [("input.usageLimit", "INVALID")]),
        ({"kind": "FIXED"}, [("input.value", "REQUIRED")]),
        ({"code": "WELCOME10"}, [("input.code", "UNIQUE")]),
        (
            {"startsAt": "3000-01-01T00:00:00Z", "endsAt": "2999-01-01T00:00:00Z"},
            [("input.endsAt", "INVALID")],
        ),
        ({"value": "101"}, [("input.value", "INVALID")]),
    ]
    for variables, expected in bad:
        payload = await shop.mutate(PROMO_UPDATE, id=created["id"], input=variables)
        assert errors(payload) == expected, (variables, payload)
    for bad_id, code in (
        (gid("Product", 1), "INVALID"),
        (gid("PromoCode", 98765), "NOT_FOUND"),
        ("###", "INVALID"),
    ):
        payload = await shop.mutate(PROMO_UPDATE, id=bad_id, input={"value": "5"})
        assert errors(payload) == [("id", code)]
    assert await rows(shop.db, promo_codes) == before
    payload = await shop.mutate(PROMO_UPDATE, id=created["id"], input={"usageLimit": 3})
    assert payload["errors"] == [] and payload["promoCode"]["usageLimit"] == 3


async def test_deleting_a_redeemed_code_keeps_orders(shop: Shop) -> None:
    created = (await shop.mutate(PROMO_CREATE, input=promo_input()))["promoCode"]
    (v1,) = await stock_variants(shop.db, 1, prices=[8000])
    order = await place_order(caller(shop.client), [(v1, 1)], promo="spring-sale")
    assert order["discount"]["amount"] == "10.00"
    open_checkout = await ready_checkout(caller(shop.client), [(v1, 1)], promo="spring-sale")

    payload = await shop.mutate(PROMO_DELETE, id=created["id"])
    assert payload["errors"] == []
    assert payload["deletedId"] == created["id"]
    assert payload["promoCode"] == {"code": "SPRING-SALE"}
    async with shop.db.read() as conn:
        kept = (await conn.execute(sa.select(orders.c.promo_code, orders.c.discount_amount))).all()
        assert [tuple(r) for r in kept] == [("SPRING-SALE", 1000)]
        redemptions = await conn.execute(sa.select(sa.func.count()).select_from(promo_redemptions))
        assert redemptions.scalar_one() == 0
    body = await shop.call(
        "query($id: ID!) { order(id: $id) { discount { amount } } }", {"id": order["id"]}
    )
    assert body["data"]["order"]["discount"]["amount"] == "10.00"
    found = await read_checkout(caller(shop.client), open_checkout["id"])
    assert found is not None and found["promoCode"] is None
    again = await shop.mutate(PROMO_DELETE, id=created["id"])
    assert errors(again) == [("id", "NOT_FOUND")]
    assert [a for a, _ in await audit_actions(shop.db)] == ["promoCodeCreate", "promoCodeDelete"]


async def test_listing_codes(shop: Shop) -> None:
    for code in ("AAA-1", "AAA-2", "BBB-1"):
        payload = await shop.mutate(PROMO_CREATE, input=promo_input(code=code))
        assert payload["errors"] == []
    body = await shop.call(PROMO_LIST, {"first": 2})
    page = body["data"]["promoCodes"]
    assert page["totalCount"] == 6  # 3 seeded
    assert [n["code"] for n in page["nodes"]] == ["AAA-1", "AAA-2"]
    body = await shop.call(PROMO_LIST, {"first": 10, "after": page["pageInfo"]["endCursor"]})
    assert [n["code"] for n in body["data"]["promoCodes"]["nodes"]] == [
        "BBB-1", "SAVE5", "SUMMER25", "WELCOME10",
    ]  # fmt: skip
    body = await shop.call(PROMO_LIST, {"filter": {"search": "aaa"}})
    assert [n["code"] for n in body["data"]["promoCodes"]["nodes"]] == ["AAA-1", "AAA-2"]
    body = await shop.call(PROMO_LIST, {"filter": {"kind": "FIXED"}})
    assert [n["code"] for n in body["data"]["promoCodes"]["nodes"]] == ["SAVE5"]
    body = await shop.call(PROMO_LIST, {"filter": {"search": "%"}})
    assert body["data"]["promoCodes"]["nodes"] == []
    body = await shop.call(PROMO_LIST, {"after": "garbage"})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    counts = []
    for n in (1, 6):
        body = await shop.call(PROMO_LIST, {"first": n})
        counts.append(body["extensions"]["sql"]["count"])
    assert counts[0] == counts[1]


async def test_listing_codes_needs_manage_discounts(shop: Shop) -> None:
    others = [p for p in PERMISSIONS if p != "MANAGE_DISCOUNTS"]
    user_id = await add_user(shop.db, "other@example.com", is_staff=True, permissions=others)
    body = await shop.call(PROMO_LIST, {}, token=await mint_token(shop.db, user_id))
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    response = await shop.client.post("/graphql", json={"query": PROMO_LIST})
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["UNAUTHENTICATED"]


# ------------------------------------------------------------------------------ shipping


async def test_shipping_method_lifecycle(shop: Shop) -> None:
    payload = await shop.mutate(
        METHOD_CREATE,
        input={"name": " Next day ", "price": "12.5", "countries": ["us", "CA", "US"]},
    )
    assert payload["errors"] == []
    method = payload["shippingMethod"]
    assert method["name"] == "Next day"
    assert method["price"] == {"amount": "12.50", "currency": "USD"}
    assert method["countries"] == ["US", "CA"] and method["freeAbove"] is None
    public = await caller(shop.client)("{ shippingMethods { name } }")
    assert "Next day" in [m["name"] for m in public["data"]["shippingMethods"]]

    payload = await shop.mutate(
        METHOD_UPDATE, id=method["id"], input={"freeAbove": "100", "countries": ["DE"]}
    )
    assert payload["errors"] == []
    assert payload["shippingMethod"]["freeAbove"] == {"amount": "100.00"}
    assert payload["shippingMethod"]["countries"] == ["DE"]
    assert payload["shippingMethod"]["price"]["amount"] == "12.50"
    payload = await shop.mutate(METHOD_UPDATE, id=method["id"], input={"freeAbove": None})
    assert payload["shippingMethod"]["freeAbove"] is None
    assert [a for a, _ in await audit_actions(shop.db)] == [
        "shippingMethodCreate", "shippingMethodUpdate", "shippingMethodUpdate",
    ]  # fmt: skip


async def test_deleting_a_method_in_use(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1)
    guest = caller(shop.client)
    order = await place_order(guest, [(v1, 1)], method="Express")
    checkout = await ready_checkout(guest, [(v1, 1)], method="Express")
    assert checkout["shippingMethod"]["name"] == "Express"
    methods = {
        m["name"]: m["id"]
        for m in (await guest("{ shippingMethods { id name } }"))["data"]["shippingMethods"]
    }

    payload = await shop.mutate(METHOD_DELETE, id=methods["Express"])
    assert payload["errors"] == []
    assert payload["deletedId"] == methods["Express"]
    assert payload["shippingMethod"] == {"name": "Express"}
    found = await read_checkout(guest, checkout["id"])
    assert found is not None and found["shippingMethod"] is None
    body = await shop.call(
        "query($id: ID!) { order(id: $id) { shippingMethodName } }", {"id": order["id"]}
    )
    assert body["data"]["order"]["shippingMethodName"] == "Express"
    assert errors(await shop.mutate(METHOD_DELETE, id=methods["Express"])) == [("id", "NOT_FOUND")]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": ""}, [("input.name", "REQUIRED")]),
        ({"name": "x" * 10_000}, [("input.name", "INVALID")]),
        ({"name": "bad\x00name"}, [("input.name", "INVALID")]),
        ({"name": "line\nbreak"}, [("input.name", "INVALID")]),
        ({"price": "-1"}, [("input.price", "INVALID")]),
        ({"price": "1.001"}, [("input.price", "INVALID")]),
        ({"countries": []}, [("input.countries", "REQUIRED")]),
        ({"countries": ["US", "XX"]}, [("input.countries.1", "INVALID")]),
        ({"countries": ["U\x00"]}, [("input.countries.0", "INVALID")]),
        ({"countries": ["US"] * 300}, [("input.countries", "INVALID")]),
        ({"freeAbove": "-0.01"}, [("input.freeAbove", "INVALID")]),
    ],
)
async def test_bad_shipping_input_writes_nothing(
    shop: Shop, overrides: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    before = await rows(shop.db, shipping_methods)
    data = {"name": "Courier", "price": "5.00", "countries": ["US"], **overrides}
    payload = await shop.mutate(METHOD_CREATE, input=data)
    assert errors(payload) == expected, payload
    assert payload["shippingMethod"] is None
    existing = gid("ShippingMethod", before[0][0])
    payload = await shop.mutate(METHOD_UPDATE, id=existing, input=overrides)
    assert errors(payload) == expected, payload
    assert await rows(shop.db, shipping_methods) == before
    assert await audit_actions(shop.db) == []


async def test_shipping_ids_are_checked(shop: Shop) -> None:
    before = await rows(shop.db, shipping_methods)
    for bad_id, code in (
        (gid("Product", 1), "INVALID"),
        (gid("ShippingMethod", 98765), "NOT_FOUND"),
        ("", "INVALID"),
    ):
        assert errors(await shop.mutate(METHOD_UPDATE, id=bad_id, input={"name": "X"})) == [
            ("id", code)
        ]
        assert errors(await shop.mutate(METHOD_DELETE, id=bad_id)) == [("id", code)]
    assert await rows(shop.db, shipping_methods) == before
