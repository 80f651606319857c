"""Checkout through HTTP: building a cart (guest or customer), shipping methods, promo
codes, bad input refused with precise payload errors and nothing changed, and completion
into a paid order exactly once per idempotency key."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import checkout_flow as f
import httpx
import pytest
import sqlalchemy as sa
from conftest import make_client

from models.accounts.tables import addresses
from models.checkout.tables import checkout_attempts, checkout_lines, checkouts, promo_codes
from models.db import Database, utcnow
from models.orders.tables import orders
from models.payments.tables import dummy_charges, payments


@pytest.fixture
async def http(fresh_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fresh_db) as client:
        yield client


def totals(checkout: dict[str, Any]) -> tuple[int, int, int, int]:
    """(subtotal, shipping, discount, total) in minor units."""
    return (
        f.minor(checkout["subtotal"]["amount"]),
        f.minor(checkout["shippingPrice"]["amount"]),
        f.minor(checkout["discount"]["amount"]),
        f.minor(checkout["total"]["amount"]),
    )


def lines_of(checkout: dict[str, Any]) -> list[tuple[str, int]]:
    return [(line["variant"]["id"], line["quantity"]) for line in checkout["lines"]]


def gids(*pairs: tuple[int, int]) -> list[tuple[str, int]]:
    return [(f.variant_gid(v), q) for v, q in pairs]


async def ok(gql: f.GraphQL, mutation: str, variables: dict[str, Any]) -> dict[str, Any]:
    """A mutation that must succeed; the checkout it returns."""
    payload = await f.mutate(gql, mutation, variables)
    assert payload["errors"] == [], payload["errors"]
    checkout: dict[str, Any] = payload["checkout"]
    return checkout


async def refused(
    gql: f.GraphQL, mutation: str, variables: dict[str, Any]
) -> list[tuple[str | None, str]]:
    """A mutation that must fail in its payload; (field, code) of each error."""
    payload = await f.mutate(gql, mutation, variables)
    assert payload["errors"], payload
    assert payload.get("checkout") is None and payload.get("order") is None, payload
    return [(e["field"], e["code"]) for e in payload["errors"]]


# ------------------------------------------------------------------------------ building


async def test_guest_builds_a_checkout_with_totals_computed_on_the_server(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, b, c = await f.stock_variants(fresh_db, 3, prices=[1250, 799, 3000])
    gql = f.caller(http)
    checkout = await f.create_checkout(gql, [(a, 2), (b, 1)], email=None)
    cid = checkout["id"]
    assert checkout["email"] is None and checkout["user"] is None
    assert lines_of(checkout) == gids((a, 2), (b, 1))
    assert checkout["quantity"] == 3
    assert [
        (ln["unitPrice"]["amount"], ln["totalPrice"]["amount"]) for ln in checkout["lines"]
    ] == [
        ("12.50", "25.00"),
        ("7.99", "7.99"),
    ]
    assert totals(checkout) == (3299, 0, 0, 3299)
    assert checkout["subtotal"]["currency"] == "USD"

    # Adding a variant already in the cart adds to its line; a new one gets a new line.
    checkout = await ok(gql, f.LINES_ADD, {"id": cid, "lines": f.line_inputs([(a, 1), (c, 1)])})
    assert lines_of(checkout) == gids((a, 3), (b, 1), (c, 1))
    assert totals(checkout) == (3 * 1250 + 799 + 3000, 0, 0, 7549)
    line_id = {ln["variant"]["id"]: ln["id"] for ln in checkout["lines"]}

    # Update sets quantities; 0 removes the line.
    checkout = await ok(
        gql,
        f.LINES_UPDATE,
        {"id": cid, "lines": [{"lineId": line_id[f.variant_gid(b)], "quantity": 4},
                              {"lineId": line_id[f.variant_gid(a)], "quantity": 0}]},
    )  # fmt: skip
    assert lines_of(checkout) == gids((b, 4), (c, 1))
    checkout = await ok(gql, f.LINES_DELETE, {"id": cid, "lineIds": [line_id[f.variant_gid(c)]]})
    assert lines_of(checkout) == gids((b, 4))
    assert totals(checkout) == (3196, 0, 0, 3196)

    checkout = await ok(gql, f.EMAIL_UPDATE, {"id": cid, "email": " Shopper@Example.COM "})
    assert checkout["email"] == "shopper@example.com"
    checkout = await ok(gql, f.ADDRESS_UPDATE, {"id": cid, "address": f.US_ADDRESS})
    assert checkout["shippingAddress"] == {
        **f.US_ADDRESS, "companyName": "", "streetAddress2": "", "countryArea": "", "phone": "",
    }  # fmt: skip
    assert [m["name"] for m in checkout["availableShippingMethods"]] == ["Standard", "Express"]
    methods = await f.shipping_method_ids(gql)
    checkout = await ok(gql, f.METHOD_UPDATE, {"id": cid, "method": methods["Standard"]})
    assert checkout["shippingMethod"] == {"id": methods["Standard"], "name": "Standard"}
    assert totals(checkout) == (3196, 499, 0, 3695)

    # SAVE5: 5.00 off above 25.00; codes are case-insensitive and trimmed.
    checkout = await ok(gql, f.PROMO_APPLY, {"id": cid, "code": " save5 "})
    assert checkout["promoCode"] == "SAVE5"
    assert totals(checkout) == (3196, 499, 500, 3195)
    # Standard ships free from 50.00 after the discount: 61.96 - 5.00 qualifies ...
    checkout = await ok(gql, f.LINES_ADD, {"id": cid, "lines": f.line_inputs([(c, 1)])})
    assert totals(checkout) == (6196, 0, 500, 5696)
    # ... 53.97 - 5.00 = 48.97 does not ...
    checkout = await ok(
        gql, f.LINES_UPDATE, {"id": cid, "lines": [{"lineId": line_id[f.variant_gid(b)],
                                                     "quantity": 3}]}
    )  # fmt: skip
    assert totals(checkout) == (5397, 499, 500, 5396)
    # ... and without the code 53.97 does.
    checkout = await ok(gql, f.PROMO_REMOVE, {"id": cid})
    assert checkout["promoCode"] is None
    assert totals(checkout) == (5397, 0, 0, 5397)
    assert checkout == await f.read_checkout(gql, cid)


async def test_totals_follow_current_prices(fresh_db: Database, http: httpx.AsyncClient) -> None:
    a, b = await f.stock_variants(fresh_db, 2, prices=[2000, 1500])
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(a, 2), (b, 1)])
    assert totals(checkout) == (5500, 0, 0, 5500)  # free shipping from 50.00

    await f.set_variant(fresh_db, a, price_amount=1001)
    checkout = await f.read_checkout(gql, checkout["id"])
    assert checkout is not None
    assert checkout["lines"][0]["unitPrice"]["amount"] == "10.01"
    assert checkout["lines"][0]["totalPrice"]["amount"] == "20.02"
    assert totals(checkout) == (3502, 499, 0, 4001)

    # The order charges the current price, not the one seen when the line was added.
    payload = await f.complete(gql, checkout["id"], "k-prices")
    assert payload["errors"] == []
    assert payload["order"]["total"]["amount"] == "40.01"
    async with fresh_db.read() as conn:
        charged = (await conn.execute(sa.select(dummy_charges.c.amount))).scalar_one()
    assert charged == 4001


async def test_shipping_methods_depend_on_the_address_country(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, prices=[4000])
    gql = f.caller(http)
    methods = await f.shipping_method_ids(gql)
    assert set(methods) == {"Standard", "Express", "EU Standard", "International"}
    checkout = await f.create_checkout(gql, [(v, 1)])
    cid = checkout["id"]
    # Without an address every method is offered, and none can be chosen yet.
    assert len(checkout["availableShippingMethods"]) == 4
    assert await refused(gql, f.METHOD_UPDATE, {"id": cid, "method": methods["Standard"]}) == [
        ("shippingAddress", "REQUIRED")
    ]

    germany = {**f.US_ADDRESS, "countryCode": "de", "postalCode": "10115", "city": "Berlin"}
    checkout = await ok(gql, f.ADDRESS_UPDATE, {"id": cid, "address": germany})
    assert checkout["shippingAddress"]["countryCode"] == "DE"
    assert [m["name"] for m in checkout["availableShippingMethods"]] == ["EU Standard"]
    for name in ("Standard", "Express", "International"):
        assert await refused(gql, f.METHOD_UPDATE, {"id": cid, "method": methods[name]}) == [
            ("shippingMethodId", "SHIPPING_METHOD_NOT_AVAILABLE")
        ]
        assert (await f.read_checkout(gql, cid) or {})["shippingMethod"] is None
    checkout = await ok(gql, f.METHOD_UPDATE, {"id": cid, "method": methods["EU Standard"]})
    assert totals(checkout) == (4000, 899, 0, 4899)
    checkout = await ok(gql, f.LINES_ADD, {"id": cid, "lines": f.line_inputs([(v, 1)])})
    assert totals(checkout) == (8000, 0, 0, 8000)  # EU Standard: free from 75.00

    # Moving the address where the method does not ship drops the method.
    checkout = await ok(gql, f.ADDRESS_UPDATE, {"id": cid, "address": f.US_ADDRESS})
    assert checkout["shippingMethod"] is None
    assert totals(checkout) == (8000, 0, 0, 8000)
    unknown = f.gid("ShippingMethod", 999)
    assert await refused(gql, f.METHOD_UPDATE, {"id": cid, "method": unknown}) == [
        ("shippingMethodId", "NOT_FOUND")
    ]


# ------------------------------------------------------------------------------ visibility


async def test_a_customers_checkout_is_theirs_alone(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    ann_id, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    _, bob = await f.add_signed_in_customer(fresh_db, http, "bob@example.com")
    anonymous = f.caller(http)

    mine = await f.ready_checkout(ann, [(v, 2)], email=None)
    cid = mine["id"]
    assert mine["user"] == {"id": f.gid("User", ann_id), "email": "ann@example.com"}
    assert mine["email"] == "ann@example.com"
    methods = await f.shipping_method_ids(ann)
    line_id = mine["lines"][0]["id"]
    attempts: list[tuple[str, dict[str, Any]]] = [
        (f.LINES_ADD, {"id": cid, "lines": f.line_inputs([(v, 1)])}),
        (f.LINES_UPDATE, {"id": cid, "lines": [{"lineId": line_id, "quantity": 5}]}),
        (f.LINES_DELETE, {"id": cid, "lineIds": [line_id]}),
        (f.EMAIL_UPDATE, {"id": cid, "email": "thief@example.com"}),
        (f.ADDRESS_UPDATE, {"id": cid, "address": {**f.US_ADDRESS, "city": "Elsewhere"}}),
        (f.METHOD_UPDATE, {"id": cid, "method": methods["Express"]}),
        (f.PROMO_APPLY, {"id": cid, "code": "SAVE5"}),
        (f.PROMO_REMOVE, {"id": cid}),
        (f.COMPLETE, {"id": cid, "payment": {"gateway": "dummy", "token": "tok_visa"},
                      "key": "k-thief"}),
    ]  # fmt: skip
    for other in (anonymous, bob):
        body = await other(
            "query($id: ID!) { checkout(id: $id) { id } node(id: $id) { id } "
            "nodes(ids: [$id]) { id } }",
            {"id": cid},
        )
        assert body["data"] == {"checkout": None, "node": None, "nodes": [None]}
        for mutation, variables in attempts:
            assert await refused(other, mutation, variables) == [("checkoutId", "NOT_FOUND")]
    assert await refused(bob, f.CUSTOMER_ATTACH, {"id": cid}) == [("checkoutId", "NOT_FOUND")]
    body = await anonymous(f.CUSTOMER_ATTACH, {"id": cid}, errors=True)
    assert f.top_codes(body) == ["UNAUTHENTICATED"]

    assert await f.read_checkout(ann, cid) == mine
    assert await f.count_rows(fresh_db, orders) == 0
    assert await f.count_rows(fresh_db, payments) == 0


async def test_a_guest_checkout_is_reachable_by_its_id_only(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    _, bob = await f.add_signed_in_customer(fresh_db, http, "bob@example.com")
    anonymous = f.caller(http)
    guest = await f.create_checkout(anonymous, [(v, 1)])
    token = f.gid("Checkout", "x" * 43)
    assert len(guest["id"]) > len(f.gid("Checkout", 10**9))  # not a sequential number
    for viewer in (anonymous, bob):
        assert await f.read_checkout(viewer, guest["id"]) == guest
        assert await f.read_checkout(viewer, token) is None
        assert await refused(viewer, f.EMAIL_UPDATE, {"id": token, "email": "a@b.co"}) == [
            ("checkoutId", "NOT_FOUND")
        ]
    # Anyone holding the ID may work on it (it stays a guest checkout).
    checkout = await ok(bob, f.EMAIL_UPDATE, {"id": guest["id"], "email": "bob@example.com"})
    assert checkout["user"] is None
    other = await f.create_checkout(anonymous, [(v, 1)])
    assert other["id"] != guest["id"]


async def test_signing_in_attaches_the_guest_checkout(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    anonymous = f.caller(http)
    guest = await f.create_checkout(anonymous, [(v, 3)], email="someone@example.com")
    cid = guest["id"]
    ann_id, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    _, bob = await f.add_signed_in_customer(fresh_db, http, "bob@example.com")

    payload = await f.mutate(ann, f.CUSTOMER_ATTACH, {"id": cid})
    assert payload["errors"] == []
    attached = await f.read_checkout(ann, cid)
    assert attached is not None
    assert attached["user"] == {"id": f.gid("User", ann_id), "email": "ann@example.com"}
    assert attached["email"] == "ann@example.com"
    assert lines_of(attached) == gids((v, 3))
    async with fresh_db.read() as conn:
        owner = (await conn.execute(sa.select(checkouts.c.user_id))).scalar_one()
    assert owner == ann_id
    # Now it is Ann's alone: the ID no longer opens it for anyone else.
    assert await f.read_checkout(anonymous, cid) is None
    assert await f.read_checkout(bob, cid) is None
    assert await refused(bob, f.CUSTOMER_ATTACH, {"id": cid}) == [("checkoutId", "NOT_FOUND")]
    assert await refused(anonymous, f.EMAIL_UPDATE, {"id": cid, "email": "x@example.com"}) == [
        ("checkoutId", "NOT_FOUND")
    ]
    assert (await f.mutate(ann, f.CUSTOMER_ATTACH, {"id": cid}))["errors"] == []  # idempotent
    assert await f.read_checkout(ann, cid) == attached
    # Anonymous shoppers cannot attach anything.
    other = await f.create_checkout(anonymous, [(v, 1)])
    body = await anonymous(f.CUSTOMER_ATTACH, {"id": other["id"]}, errors=True)
    assert f.top_codes(body) == ["UNAUTHENTICATED"]
    assert (await f.read_checkout(anonymous, other["id"]) or {})["user"] is None

    order = await f.place_order(ann, [(v, 1)], email=None)
    assert order["user"]["email"] == "ann@example.com"


async def test_checkout_customer_attach_returns_the_attached_checkout(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    guest = await f.create_checkout(f.caller(http), [(v, 1)])
    ann_id, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    attached = await ok(ann, f.CUSTOMER_ATTACH, {"id": guest["id"]})
    assert attached is not None
    assert attached["user"] == {"id": f.gid("User", ann_id), "email": "ann@example.com"}


async def test_a_checkout_with_an_unpublished_product_stays_readable(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, b = await f.stock_variants(fresh_db, 2)
    gql = f.caller(http)
    checkout = await f.create_checkout(gql, [(a, 1), (b, 1)])
    product_id = await f.set_product_of(fresh_db, b, is_published=False)
    body = await gql(
        "query($id: ID!) { checkout(id: $id) { lines { id variant { id product { id } } } } }",
        {"id": checkout["id"]},
    )
    lines = body["data"]["checkout"]["lines"]
    assert [line["variant"]["id"] for line in lines] == [f.variant_gid(a), f.variant_gid(b)]
    assert lines[1]["variant"]["product"] == {"id": f.gid("Product", product_id)}


# ------------------------------------------------------------------------------ promo codes


async def test_invalid_promo_codes_are_refused_and_nothing_changes(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, prices=[2000])
    now = utcnow()
    await f.add_promo(fresh_db, "OLD", ends_at=now - timedelta(minutes=1))
    await f.add_promo(fresh_db, "SOON", starts_at=now + timedelta(days=1))
    await f.add_promo(fresh_db, "GONE", usage_limit=5, used_count=5)
    await f.add_promo(fresh_db, "BIG", kind="FIXED", value=300, min_subtotal=4001)
    await f.add_promo(fresh_db, "EURO", kind="FIXED", value=300, currency="EUR")
    gql = f.caller(http)
    checkout = await f.create_checkout(gql, [(v, 2)])
    cid = checkout["id"]
    checkout = await ok(gql, f.PROMO_APPLY, {"id": cid, "code": "SAVE5"})
    cases = {
        "OLD": "PROMO_CODE_EXPIRED",
        "SOON": "PROMO_CODE_INVALID",
        "GONE": "PROMO_CODE_EXHAUSTED",
        "big": "PROMO_CODE_MIN_SUBTOTAL",  # 40.00 < 40.01
        "EURO": "PROMO_CODE_INVALID",
        "NOSUCHCODE": "PROMO_CODE_INVALID",
        "": "PROMO_CODE_INVALID",
        "X" * 41: "PROMO_CODE_INVALID",
    }
    for code, error in cases.items():
        assert await refused(gql, f.PROMO_APPLY, {"id": cid, "code": code}) == [
            ("promoCode", error)
        ], code
        assert await f.read_checkout(gql, cid) == checkout
    # The boundaries are inclusive where they should be: exactly the minimum qualifies.
    await f.set_variant(fresh_db, v, price_amount=2001)
    checkout = await ok(gql, f.PROMO_APPLY, {"id": cid, "code": "BIG"})
    assert totals(checkout)[2] == 300


async def test_a_fixed_promo_never_exceeds_the_subtotal(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, prices=[700])
    await f.add_promo(fresh_db, "HUGE", kind="FIXED", value=100_00)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(v, 1)], promo="HUGE")
    assert totals(checkout) == (700, 499, 700, 499)
    payload = await f.complete(gql, checkout["id"], "k-huge")
    assert payload["errors"] == []
    assert [payload["order"][k]["amount"] for k in ("subtotal", "discount", "total")] == [
        "7.00",
        "7.00",
        "4.99",
    ]


async def test_a_promo_that_stops_applying_is_refused_at_completion(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, prices=[1500])
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(v, 2)], promo="SAVE5")
    assert totals(checkout) == (3000, 499, 500, 2999)
    await f.set_variant(fresh_db, v, price_amount=1000)  # now below SAVE5's 25.00
    checkout = await f.read_checkout(gql, checkout["id"])
    assert checkout is not None and totals(checkout) == (2000, 499, 0, 2499)
    before = await f.stock_of(fresh_db, [v])
    assert await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": {"gateway": "dummy",
                          "token": "tok_visa"}, "key": "k-min"}
    ) == [("promoCode", "PROMO_CODE_MIN_SUBTOTAL")]  # fmt: skip
    assert await f.stock_of(fresh_db, [v]) == before
    assert await f.count_rows(fresh_db, payments) == 0


async def test_a_single_use_code_works_once_per_customer(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, prices=[2000])
    _, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    _, bob = await f.add_signed_in_customer(fresh_db, http, "bob@example.com")
    # Two carts with WELCOME10 before it is used: only the first to complete gets it.
    first = await f.ready_checkout(ann, [(v, 1)], promo="WELCOME10", email=None)
    second = await f.ready_checkout(ann, [(v, 1)], promo="welcome10", email=None)
    assert totals(first) == (2000, 499, 200, 2299)
    payload = await f.complete(ann, first["id"], "k-welcome-1")
    assert payload["errors"] == [] and payload["order"]["discount"]["amount"] == "2.00"

    before = await f.stock_of(fresh_db, [v])
    assert await refused(
        ann, f.COMPLETE, {"id": second["id"], "payment": {"gateway": "dummy",
                          "token": "tok_visa"}, "key": "k-welcome-2"}
    ) == [("promoCode", "PROMO_CODE_ALREADY_USED")]  # fmt: skip
    assert await f.stock_of(fresh_db, [v]) == before
    assert await f.successful_charges(fresh_db) == 1
    third = await f.create_checkout(ann, [(v, 1)], email=None)
    assert await refused(ann, f.PROMO_APPLY, {"id": third["id"], "code": "WELCOME10"}) == [
        ("promoCode", "PROMO_CODE_ALREADY_USED")
    ]
    # Another customer, and a guest (known by email), may still use it once.
    await f.place_order(bob, [(v, 1)], promo="WELCOME10", email=None)
    # The code is single-use per account and per email: a guest cart under Ann's email
    # cannot use it again either.
    as_guest = await f.create_checkout(f.caller(http), [(v, 1)], email="ann@example.com")
    assert await refused(
        f.caller(http), f.PROMO_APPLY, {"id": as_guest["id"], "code": "WELCOME10"}
    ) == [("promoCode", "PROMO_CODE_ALREADY_USED")]
    await f.place_order(f.caller(http), [(v, 1)], email="guest@example.com", promo="WELCOME10")
    guest_again = await f.create_checkout(f.caller(http), [(v, 1)], email="GUEST@example.com")
    assert await refused(
        f.caller(http), f.PROMO_APPLY, {"id": guest_again["id"], "code": "WELCOME10"}
    ) == [("promoCode", "PROMO_CODE_ALREADY_USED")]
    # A guest with no email yet cannot be told apart: the code asks for the email first.
    anonymous_cart = await f.create_checkout(f.caller(http), [(v, 1)], email=None)
    assert await refused(
        f.caller(http), f.PROMO_APPLY, {"id": anonymous_cart["id"], "code": "WELCOME10"}
    ) == [("email", "REQUIRED")]


async def test_a_usage_limit_is_never_exceeded(fresh_db: Database, http: httpx.AsyncClient) -> None:
    [v] = await f.stock_variants(fresh_db, 1, prices=[2000])
    promo_id = await f.add_promo(fresh_db, "ONCE", kind="FIXED", value=100, usage_limit=1)
    gql = f.caller(http)
    first = await f.ready_checkout(gql, [(v, 1)], promo="ONCE")
    second = await f.ready_checkout(gql, [(v, 1)], email="other@example.com", promo="ONCE")
    assert (await f.complete(gql, first["id"], "k-once-1"))["errors"] == []
    assert await refused(
        gql, f.COMPLETE, {"id": second["id"], "payment": {"gateway": "dummy",
                          "token": "tok_visa"}, "key": "k-once-2"}
    ) == [("promoCode", "PROMO_CODE_EXHAUSTED")]  # fmt: skip
    async with fresh_db.read() as conn:
        used = (
            await conn.execute(
                sa.select(promo_codes.c.used_count).where(promo_codes.c.id == promo_id)
            )
        ).scalar_one()
    assert used == 1
    assert await f.successful_charges(fresh_db) == 1
    third = await f.create_checkout(gql, [(v, 1)])
    assert await refused(gql, f.PROMO_APPLY, {"id": third["id"], "code": "ONCE"}) == [
        ("promoCode", "PROMO_CODE_EXHAUSTED")
    ]


# ------------------------------------------------------------------------------ bad input


async def _state(db: Database) -> tuple[list[tuple[Any, ...]], int]:
    """Every checkout line and the number of checkouts: what a refused call must not touch."""
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(checkout_lines.c.checkout_id, checkout_lines.c.variant_id,
                      checkout_lines.c.quantity).order_by(checkout_lines.c.id)
        )  # fmt: skip
        found = [tuple(r) for r in rows]
    return found, await f.count_rows(db, checkouts)


async def test_quantities_out_of_range_are_refused(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, b = await f.stock_variants(fresh_db, 2, quantity=2000)
    gql = f.caller(http)
    checkout = await f.create_checkout(gql, [(a, 1)])
    cid, line_id = checkout["id"], checkout["lines"][0]["id"]
    before = await _state(fresh_db)
    for quantity in (0, -1, 1000, 10**9, -(2**31), 2**31 - 1):
        bad = [{"variantId": f.variant_gid(b), "quantity": quantity}]
        assert await refused(gql, f.CHECKOUT_CREATE, {"input": {"lines": bad}}) == [
            ("input.lines.0.quantity", "QUANTITY_OUT_OF_RANGE")
        ], quantity
        assert await refused(gql, f.LINES_ADD, {"id": cid, "lines": bad}) == [
            ("lines.0.quantity", "QUANTITY_OUT_OF_RANGE")
        ], quantity
        if quantity != 0:  # 0 removes the line
            update = [{"lineId": line_id, "quantity": quantity}]
            assert await refused(gql, f.LINES_UPDATE, {"id": cid, "lines": update}) == [
                ("lines.0.quantity", "QUANTITY_OUT_OF_RANGE")
            ], quantity
        assert await _state(fresh_db) == before


async def test_quantity_limits_hold_for_the_line_total(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, quantity=2000)
    gql = f.caller(http)
    checkout = await ok(gql, f.CHECKOUT_CREATE, {"input": {"lines": f.line_inputs([(v, 999)])}})
    assert checkout["quantity"] == 999
    before = await _state(fresh_db)
    errors = await refused(
        gql, f.LINES_ADD, {"id": checkout["id"], "lines": f.line_inputs([(v, 1)])}
    )
    assert [code for _, code in errors] == ["QUANTITY_OUT_OF_RANGE"]
    # The same variant twice in one request is one line of the summed quantity.
    errors = await refused(
        gql, f.CHECKOUT_CREATE, {"input": {"lines": f.line_inputs([(v, 500), (v, 500)])}}
    )
    assert [code for _, code in errors] == ["QUANTITY_OUT_OF_RANGE"]
    assert await _state(fresh_db) == before


async def test_a_quantity_beyond_graphql_int_is_a_request_error(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    gql = f.caller(http)
    inline = await gql(
        f'mutation {{ checkoutCreate(input: {{lines: [{{variantId: "{f.variant_gid(v)}", '
        f"quantity: {10**10}}}]}}) {{ checkout {{ id }} }} }}",
        errors=True,
    )
    assert f.top_codes(inline) == ["GRAPHQL_VALIDATION_FAILED"]
    body = await gql(
        f.CHECKOUT_CREATE,
        {"input": {"lines": [{"variantId": f.variant_gid(v), "quantity": 10**10}]}},
        errors=True,
    )
    assert f.top_codes(body) == ["BAD_USER_INPUT"]
    assert body.get("data") is None
    assert await f.count_rows(fresh_db, checkouts) == 0


async def test_unknown_malformed_and_unsellable_variants_are_refused(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, hidden, empty = await f.stock_variants(fresh_db, 3)
    await f.set_product_of(fresh_db, hidden, is_published=False)
    await f.set_variant(fresh_db, empty, quantity=0)
    gql = f.caller(http)
    checkout = await f.create_checkout(gql, [(a, 1)])
    before = await _state(fresh_db)
    cases = [
        (f.gid("ProductVariant", 999_999), "NOT_FOUND"),
        ("not-an-id", "INVALID"),
        ("", "INVALID"),
        (f.gid("Product", a), "INVALID"),  # an ID of the wrong type
        (f.gid("ProductVariant", "1 OR 1=1"), "INVALID"),
        (f.variant_gid(hidden), "PRODUCT_UNAVAILABLE"),
        (f.variant_gid(empty), "INSUFFICIENT_STOCK"),
    ]
    for variant_id, code in cases:
        line = [{"variantId": variant_id, "quantity": 1}]
        created = await refused(gql, f.CHECKOUT_CREATE, {"input": {"lines": line}})
        added = await refused(gql, f.LINES_ADD, {"id": checkout["id"], "lines": line})
        assert [c for _, c in created] == [c for _, c in added] == [code], variant_id
        assert added[0][0] is not None and added[0][0].startswith("lines")
    # More than the stock, even of an available variant.
    stock = (await f.stock_of(fresh_db, [a]))[a]
    errors = await refused(
        gql, f.LINES_ADD, {"id": checkout["id"], "lines": f.line_inputs([(a, stock)])}
    )
    assert [c for _, c in errors] == ["INSUFFICIENT_STOCK"]
    assert await _state(fresh_db) == before


async def test_unknown_and_malformed_checkout_and_line_ids_are_refused(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    gql = f.caller(http)
    mine = await f.create_checkout(gql, [(v, 1)])
    other = await f.create_checkout(gql, [(v, 2)])
    before = await _state(fresh_db)
    for checkout_id, code in [
        ("garbage", "INVALID"),
        (f.gid("Checkout", "short"), "INVALID"),
        (f.gid("Order", 1), "INVALID"),
        (f.gid("Checkout", "A" * 43), "NOT_FOUND"),
    ]:
        assert await refused(gql, f.EMAIL_UPDATE, {"id": checkout_id, "email": "a@b.co"}) == [
            ("checkoutId", code)
        ]
        assert await refused(gql, f.LINES_ADD, {"id": checkout_id, "lines": f.line_inputs(
            [(v, 1)])}) == [("checkoutId", code)]  # fmt: skip
    # A line of another checkout is not a line of this one.
    foreign = other["lines"][0]["id"]
    assert await refused(
        gql, f.LINES_UPDATE, {"id": mine["id"], "lines": [{"lineId": foreign, "quantity": 3}]}
    ) == [("lines", "NOT_FOUND")]
    assert await refused(gql, f.LINES_DELETE, {"id": mine["id"], "lineIds": [foreign]}) == [
        ("lineIds", "NOT_FOUND")
    ]
    assert await refused(gql, f.LINES_DELETE, {"id": mine["id"], "lineIds": ["nope"]}) == [
        ("lineIds.0", "INVALID")
    ]
    assert await refused(gql, f.EMAIL_UPDATE, {"id": mine["id"], "email": "not an email"}) == [
        ("email", "INVALID")
    ]
    assert await refused(gql, f.METHOD_UPDATE, {"id": mine["id"], "method": "x"}) == [
        ("shippingMethodId", "INVALID")
    ]
    assert await _state(fresh_db) == before
    body = await gql(f.CHECKOUT_QUERY, {"id": "garbage"}, errors=True)
    assert f.top_codes(body) == ["BAD_USER_INPUT"]


async def test_a_checkout_holds_at_most_100_lines(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    found = await f.stock_variants(fresh_db, 101)
    gql = f.caller(http)
    errors = await refused(
        gql, f.CHECKOUT_CREATE, {"input": {"lines": f.line_inputs([(v, 1) for v in found])}}
    )
    assert [c for _, c in errors] == ["TOO_MANY_LINES"]
    assert await f.count_rows(fresh_db, checkouts) == 0
    checkout = await f.create_checkout(gql, [(v, 1) for v in found[:100]])
    assert len(checkout["lines"]) == 100
    before = await _state(fresh_db)
    errors = await refused(
        gql, f.LINES_ADD, {"id": checkout["id"], "lines": f.line_inputs([(found[100], 1)])}
    )
    assert [c for _, c in errors] == ["TOO_MANY_LINES"]
    assert await _state(fresh_db) == before
    # More of a variant already in the cart is not a new line.
    checkout = await ok(gql, f.LINES_ADD, {"id": checkout["id"], "lines": f.line_inputs(
        [(found[0], 1)])})  # fmt: skip
    assert len(checkout["lines"]) == 100 and checkout["quantity"] == 101


async def test_hostile_address_strings_are_stored_verbatim(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    gql = f.caller(http)
    hostile = {
        "firstName": "Robert'); DROP TABLE orders;--",
        "lastName": "<script>alert('x')</script>",
        "companyName": "{{7*7}} ${7*7} %s%n %(x)s \\x00",
        "streetAddress1": "Straße 1 \u2013 東京 🚀 \u202eevil",
        "streetAddress2": "' OR '1'='1",
        "city": "NULL",
        "postalCode": "12345",
        "countryCode": "US",
        "countryArea": '"quoted" `back` \\ /',
        "phone": "+1 (555) 010-9999",
    }
    checkout = await f.ready_checkout(gql, [(v, 1)], address=hostile)
    assert checkout["shippingAddress"] == hostile
    assert (await f.read_checkout(gql, checkout["id"]) or {})["shippingAddress"] == hostile
    async with fresh_db.read() as conn:
        row = (await conn.execute(sa.select(addresses))).one()._mapping
    assert row["first_name"] == hostile["firstName"]
    assert row["street_address_1"] == hostile["streetAddress1"]
    order = (await f.complete(gql, checkout["id"], "k-hostile"))["order"]
    assert order["shippingAddress"] == hostile
    assert await f.count_rows(fresh_db, orders) == 1
    # Control characters are refused, not stored.
    errors = await refused(
        gql, f.ADDRESS_UPDATE, {"id": (await f.create_checkout(gql, [(v, 1)]))["id"],
                                "address": {**hostile, "city": "a\x00b"}}
    )  # fmt: skip
    assert errors == [("address.city", "INVALID")]


async def test_a_completed_checkout_cannot_change(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, b = await f.stock_variants(fresh_db, 2)
    _, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    checkout = await f.ready_checkout(f.caller(http), [(a, 1)])
    cid = checkout["id"]
    assert (await f.complete(f.caller(http), cid, "k-done"))["errors"] == []
    methods = await f.shipping_method_ids(ann)
    line_id = checkout["lines"][0]["id"]
    attempts: list[tuple[f.GraphQL, str, dict[str, Any]]] = [
        (f.caller(http), f.LINES_ADD, {"id": cid, "lines": f.line_inputs([(b, 1)])}),
        (f.caller(http), f.LINES_UPDATE, {"id": cid, "lines": [{"lineId": line_id,
                                                                 "quantity": 2}]}),
        (f.caller(http), f.LINES_DELETE, {"id": cid, "lineIds": [line_id]}),
        (f.caller(http), f.EMAIL_UPDATE, {"id": cid, "email": "late@example.com"}),
        (f.caller(http), f.ADDRESS_UPDATE, {"id": cid, "address": f.US_ADDRESS}),
        (f.caller(http), f.METHOD_UPDATE, {"id": cid, "method": methods["Express"]}),
        (f.caller(http), f.PROMO_APPLY, {"id": cid, "code": "SAVE5"}),
        (f.caller(http), f.PROMO_REMOVE, {"id": cid}),
        (ann, f.CUSTOMER_ATTACH, {"id": cid}),
    ]  # fmt: skip
    before = await _state(fresh_db)
    for gql, mutation, variables in attempts:
        assert await refused(gql, mutation, variables) == [("checkoutId", "CHECKOUT_COMPLETED")]
    assert await _state(fresh_db) == before
    after = await f.read_checkout(f.caller(http), cid)
    assert after is not None
    assert (after["email"], after["user"], after["promoCode"]) == (checkout["email"], None, None)


async def test_bad_idempotency_keys_are_refused_before_anything_happens(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(v, 1)])
    before = await f.stock_of(fresh_db, [v])
    pay = {"gateway": "dummy", "token": "tok_visa"}
    for key in ("", "k" * 256, "k" * 300, "line\nbreak", "nul\x00"):
        assert await refused(
            gql, f.COMPLETE, {"id": checkout["id"], "payment": pay, "key": key}
        ) == [("idempotencyKey", "INVALID")], key
    assert await f.stock_of(fresh_db, [v]) == before
    assert await f.count_rows(fresh_db, checkout_attempts) == 0
    assert await f.count_rows(fresh_db, payments) == 0
    # The longest key allowed works.
    assert (await f.complete(gql, checkout["id"], "k" * 255))["errors"] == []


# ------------------------------------------------------------------------------ completion


async def test_completion_creates_a_paid_order_with_line_snapshots(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, b = await f.stock_variants(fresh_db, 2, quantity=50, prices=[1999, 2550])
    ann_id, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    row_a, row_b = await f.variant_row(fresh_db, a), await f.variant_row(fresh_db, b)
    checkout = await f.ready_checkout(ann, [(a, 2), (b, 1)], email=None, method="Express")
    assert totals(checkout) == (6548, 1499, 0, 8047)
    payload = await f.complete(ann, checkout["id"], "k-order")
    assert payload["errors"] == []
    order = payload["order"]
    assert order["number"].isdigit() and len(order["number"]) <= 10
    assert (order["status"], order["paymentStatus"]) == ("UNFULFILLED", "PAID")
    assert order["email"] == "ann@example.com"
    assert order["user"] == {"id": f.gid("User", ann_id), "email": "ann@example.com"}
    assert order["shippingMethodName"] == "Express"
    assert order["shippingAddress"] == checkout["shippingAddress"]
    assert [order[k]["amount"] for k in ("subtotal", "shippingPrice", "discount", "total")] == [
        "65.48", "14.99", "0.00", "80.47",
    ]  # fmt: skip
    expected_lines = [
        {"productName": row_a["product_name"], "variantName": row_a["name"], "sku": row_a["sku"],
         "quantity": 2, "quantityFulfilled": 0, "unitPrice": {"amount": "19.99", "currency": "USD"},
         "totalPrice": {"amount": "39.98", "currency": "USD"}, "variant": {"id": f.variant_gid(a)}},
        {"productName": row_b["product_name"], "variantName": row_b["name"], "sku": row_b["sku"],
         "quantity": 1, "quantityFulfilled": 0, "unitPrice": {"amount": "25.50", "currency": "USD"},
         "totalPrice": {"amount": "25.50", "currency": "USD"}, "variant": {"id": f.variant_gid(b)}},
    ]  # fmt: skip
    assert order["lines"] == expected_lines
    [payment] = order["payments"]
    assert payment["gateway"] == "dummy" and payment["status"] == "PAID"
    assert payment["amount"]["amount"] == "80.47" and payment["pspReference"]
    assert await f.stock_of(fresh_db, [a, b]) == {a: 48, b: 49}
    assert await f.successful_charges(fresh_db, "k-order") == 1

    # Renaming and repricing the product and variants does not rewrite the order.
    await f.set_product_of(fresh_db, a, name="Renamed Product")
    await f.set_variant(fresh_db, a, name="Renamed", sku="NEW-SKU", price_amount=1)
    await f.set_variant(fresh_db, b, price_amount=99_999)
    body = await ann(
        f"query($id: ID!) {{ order(id: $id) {{ {f.ORDER_FIELDS} }} }}", {"id": order["id"]}
    )
    assert body["data"]["order"] == order


async def test_completion_requires_email_address_and_method(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    gql = f.caller(http)
    checkout = await f.create_checkout(gql, [(v, 1)], email=None)
    before = await f.stock_of(fresh_db, [v])
    errors = await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": {"gateway": "dummy",
                          "token": "tok_visa"}, "key": "k-req"}
    )  # fmt: skip
    assert sorted(errors) == [
        ("email", "REQUIRED"), ("shippingAddress", "REQUIRED"), ("shippingMethod", "REQUIRED"),
    ]  # fmt: skip
    await ok(gql, f.EMAIL_UPDATE, {"id": checkout["id"], "email": "a@example.com"})
    await ok(gql, f.ADDRESS_UPDATE, {"id": checkout["id"], "address": f.US_ADDRESS})
    assert await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": {"gateway": "dummy",
                          "token": "tok_visa"}, "key": "k-req-2"}
    ) == [("shippingMethod", "REQUIRED")]  # fmt: skip
    assert await f.stock_of(fresh_db, [v]) == before
    assert await f.count_rows(fresh_db, payments) == 0
    assert await f.count_rows(fresh_db, checkout_attempts) == 0
    # An emptied cart cannot be bought either.
    ready = await f.ready_checkout(gql, [(v, 1)])
    await ok(gql, f.LINES_DELETE, {"id": ready["id"], "lineIds": [ready["lines"][0]["id"]]})
    assert await refused(
        gql, f.COMPLETE, {"id": ready["id"], "payment": {"gateway": "dummy",
                          "token": "tok_visa"}, "key": "k-empty"}
    ) == [("lines", "REQUIRED")]  # fmt: skip


async def test_completion_rechecks_stock_and_availability(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    a, b = await f.stock_variants(fresh_db, 2, quantity=5)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(a, 4), (b, 1)])
    await f.set_variant(fresh_db, a, quantity=3)  # someone else bought some
    pay = {"gateway": "dummy", "token": "tok_visa"}
    assert await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": pay, "key": "k-stock"}
    ) == [("lines", "INSUFFICIENT_STOCK")]
    assert await f.stock_of(fresh_db, [a, b]) == {a: 3, b: 5}
    await f.set_variant(fresh_db, a, quantity=5)
    await f.set_product_of(fresh_db, b, is_published=False)
    assert await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": pay, "key": "k-hidden"}
    ) == [("lines", "PRODUCT_UNAVAILABLE")]
    assert await f.stock_of(fresh_db, [a, b]) == {a: 5, b: 5}
    assert await f.count_rows(fresh_db, payments) == 0
    assert await f.successful_charges(fresh_db) == 0


@pytest.mark.parametrize(
    "token",
    ["tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds", "tok_chargeDeclinedExpiredCard"],
)
async def test_a_declined_card_releases_the_stock_and_keeps_the_checkout_open(
    fresh_db: Database, http: httpx.AsyncClient, token: str
) -> None:
    a, b = await f.stock_variants(fresh_db, 2, quantity=10)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(a, 3), (b, 1)])
    cid = checkout["id"]
    payload = await f.complete(gql, cid, "k-decline", token=token)
    assert payload["order"] is None
    assert [e["code"] for e in payload["errors"]] == ["PAYMENT_DECLINED"]
    assert payload["errors"][0]["message"]
    assert await f.stock_of(fresh_db, [a, b]) == {a: 10, b: 10}
    assert await f.count_rows(fresh_db, orders) == 0
    assert await f.successful_charges(fresh_db) == 0
    async with fresh_db.read() as conn:
        statuses = (await conn.execute(sa.select(payments.c.status))).scalars().all()
    assert statuses == ["FAILED"]

    # Retrying the same key replays the decline (no second charge attempt) ...
    again = await f.complete(gql, cid, "k-decline", token=token)
    assert [e["code"] for e in again["errors"]] == ["PAYMENT_DECLINED"]
    assert await f.count_rows(fresh_db, dummy_charges) == 1
    # ... the same key with another card is a reuse ...
    assert [e["code"] for e in (await f.complete(gql, cid, "k-decline"))["errors"]] == [
        "IDEMPOTENCY_KEY_REUSED"
    ]
    # ... and the checkout is still open: it can change and be paid with a new key.
    await ok(gql, f.LINES_ADD, {"id": cid, "lines": f.line_inputs([(b, 1)])})
    paid = await f.complete(gql, cid, "k-new")
    assert paid["errors"] == []
    assert [line["quantity"] for line in paid["order"]["lines"]] == [3, 2]
    assert await f.stock_of(fresh_db, [a, b]) == {a: 7, b: 8}
    assert await f.successful_charges(fresh_db) == 1


async def test_an_invalid_payment_is_refused_before_anything_is_reserved(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, quantity=10)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(v, 2)])
    for payment, field in (
        ({"gateway": "dummy", "token": "tok_unknown"}, "payment.token"),
        ({"gateway": "dummy", "token": ""}, "payment.token"),
        ({"gateway": "dummy", "token": "TOK_VISA"}, "payment.token"),
        ({"gateway": "no-such-gateway", "token": "tok_visa"}, "payment.gateway"),
    ):
        assert await refused(
            gql, f.COMPLETE, {"id": checkout["id"], "payment": payment, "key": "k-invalid"}
        ) == [(field, "INVALID")], payment
        assert await f.stock_of(fresh_db, [v]) == {v: 10}
        for table in (payments, checkout_attempts, dummy_charges, orders):
            assert await f.count_rows(fresh_db, table) == 0, table.name
    # Nothing was held: the checkout is open and the same key is still free.
    assert (await f.complete(gql, checkout["id"], "k-invalid"))["errors"] == []


async def test_one_key_one_order_one_charge(fresh_db: Database, http: httpx.AsyncClient) -> None:
    [v] = await f.stock_variants(fresh_db, 1, quantity=10)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(v, 2)])
    other = await f.ready_checkout(gql, [(v, 1)])
    first = await f.complete(gql, checkout["id"], "k-same")
    second = await f.complete(gql, checkout["id"], "k-same")
    assert first["errors"] == second["errors"] == []
    assert second["order"] == first["order"]
    assert await f.successful_charges(fresh_db, "k-same") == 1
    assert await f.count_rows(fresh_db, orders) == 1
    assert await f.stock_of(fresh_db, [v]) == {v: 8}

    pay = {"gateway": "dummy", "token": "tok_visa"}
    # The key belongs to that checkout and that card.
    assert await refused(gql, f.COMPLETE, {"id": other["id"], "payment": pay, "key": "k-same"}) == [
        ("idempotencyKey", "IDEMPOTENCY_KEY_REUSED")
    ]
    assert await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": {**pay, "token": "tok_mastercard"},
                          "key": "k-same"}
    ) == [("idempotencyKey", "IDEMPOTENCY_KEY_REUSED")]  # fmt: skip
    # Another key on the completed checkout never makes a second order.
    assert await refused(
        gql, f.COMPLETE, {"id": checkout["id"], "payment": pay, "key": "k-other"}
    ) == [("checkoutId", "CHECKOUT_COMPLETED")]
    assert await f.count_rows(fresh_db, orders) == 1
    assert await f.successful_charges(fresh_db) == 1
    assert await f.stock_of(fresh_db, [v]) == {v: 8}
    # The other checkout was untouched and completes normally.
    assert (await f.complete(gql, other["id"], "k-other"))["errors"] == []
    assert await f.count_rows(fresh_db, orders) == 2


def _hold_charges(
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.AsyncClient,
    before: Callable[[str], Awaitable[None]],
) -> None:
    """Make the app's dummy gateway run `before(idempotency_key)` ahead of every charge
    (to interleave requests deterministically at the charge step)."""
    gateway = f.gateway_of(client, "dummy")
    original = gateway.charge

    async def charge(**kw: Any) -> Any:
        await before(kw["idempotency_key"])
        return await original(**kw)

    monkeypatch.setattr(gateway, "charge", charge)


async def test_concurrent_completions_with_one_key_return_the_same_order(
    fresh_db: Database, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, quantity=10)
    gql = f.caller(http)
    checkout = await f.ready_checkout(gql, [(v, 2)])
    waiting: list[str] = []
    both = asyncio.Event()

    async def barrier(_key: str) -> None:  # both calls reach the charge before either goes on
        waiting.append(_key)
        if len(waiting) == 2:
            both.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both.wait(), 3)

    _hold_charges(monkeypatch, http, barrier)
    first, second = await asyncio.gather(
        f.complete(gql, checkout["id"], "k-race"), f.complete(gql, checkout["id"], "k-race")
    )
    assert first["errors"] == second["errors"] == []
    assert first["order"] == second["order"]
    assert await f.count_rows(fresh_db, orders) == 1
    assert await f.successful_charges(fresh_db) == 1


async def test_a_charge_always_ends_in_an_order_even_when_a_single_use_promo_races(
    fresh_db: Database, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    [v] = await f.stock_variants(fresh_db, 1, quantity=10)
    _, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    first = await f.ready_checkout(ann, [(v, 1)], promo="WELCOME10")
    second = await f.ready_checkout(ann, [(v, 1)], promo="WELCOME10")

    async def complete_first_meanwhile(key: str) -> None:
        if key == "k-second":  # the other tab completes while this charge is under way
            other = await f.complete(ann, first["id"], "k-first")
            # The code's single use was taken before this charge began: the other tab
            # is refused before any money moves.
            assert f.codes(other) == ["PROMO_CODE_ALREADY_USED"]
            assert await f.successful_charges(fresh_db, "k-first") == 0

    _hold_charges(monkeypatch, http, complete_first_meanwhile)
    body = await ann(
        f.COMPLETE,
        {"id": second["id"], "payment": {"gateway": "dummy", "token": "tok_visa"},
         "key": "k-second"},
        errors=True,
    )  # fmt: skip
    # Either the order is placed, or the use is refused before any money moves.
    assert "errors" not in body, body["errors"]
    payload = body["data"]["checkoutComplete"]
    if payload["order"] is None:
        assert f.codes(payload) == ["PROMO_CODE_ALREADY_USED"]
        assert await f.successful_charges(fresh_db, "k-second") == 0
    else:
        assert await f.successful_charges(fresh_db, "k-second") == 1


async def test_complete_runs_the_same_statements_for_1_and_10_lines(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    found = await f.stock_variants(fresh_db, 10)
    gql = f.caller(http)
    counts = []
    for size in (1, 10):
        checkout = await f.ready_checkout(gql, [(v, 1) for v in found[:size]])
        body = await gql(
            f.COMPLETE,
            {"id": checkout["id"], "payment": {"gateway": "dummy", "token": "tok_visa"},
             "key": f"k-sql-{size}"},
        )  # fmt: skip
        assert body["data"]["checkoutComplete"]["errors"] == []
        assert len(body["data"]["checkoutComplete"]["order"]["lines"]) == size
        counts.append(body["extensions"]["sql"]["count"])
    print(f"checkoutComplete SQL statements: 1 line {counts[0]}, 10 lines {counts[1]}")
    assert counts[0] == counts[1], counts
    checkout = await f.ready_checkout(gql, [(found[0], 1)])
    key = f"k-{uuid.uuid4().hex}"
    await f.complete(gql, checkout["id"], key)
    replay = await gql(
        f.COMPLETE,
        {"id": checkout["id"], "payment": {"gateway": "dummy", "token": "tok_visa"}, "key": key},
    )
    replayed = replay["extensions"]["sql"]["count"]
    print(f"checkoutComplete replay (same key) SQL statements: {replayed}")
    assert replayed < counts[0]
