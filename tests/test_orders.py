"""Orders through HTTP: customers see their own (`me.orders`, `order`, `node`), nobody
else's; staff with MANAGE_ORDERS list, filter, sort and page through all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import checkout_flow as f
import httpx
import pytest
from conftest import make_client

from models.db import Database


@pytest.fixture
async def http(fresh_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fresh_db) as client:
        yield client


async def signed_in_clerk(db: Database, http: httpx.AsyncClient) -> f.GraphQL:
    """A staff member with MANAGE_ORDERS, signed in."""
    _, clerk = await f.add_signed_in_customer(
        db, http, "clerk@example.com", is_staff=True, permissions=["MANAGE_ORDERS"]
    )
    return clerk


ORDER_BY_ID = """query($id: ID!) { order(id: $id) { id number email }
  node(id: $id) { id ... on Order { number } } nodes(ids: [$id]) { id } }"""
MY_ORDERS = """query($first: Int, $after: String, $last: Int, $before: String) { me {
  orders(first: $first, after: $after, last: $last, before: $before) {
    totalCount edges { cursor node { id number } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""
ORDERS = """query($first: Int, $after: String, $last: Int, $before: String,
                  $filter: OrderFilter, $sortBy: OrderSortBy) {
  orders(first: $first, after: $after, last: $last, before: $before, filter: $filter,
         sortBy: $sortBy) {
    totalCount edges { cursor node { id number total { amount } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


async def test_customers_see_their_own_orders_and_nobody_elses(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    _, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    _, bob = await f.add_signed_in_customer(fresh_db, http, "bob@example.com")
    clerk = await signed_in_clerk(fresh_db, http)
    anonymous = f.caller(http)
    ann_orders = [await f.place_order(ann, [(v, n)], email=None) for n in (1, 2)]
    bob_order = await f.place_order(bob, [(v, 1)], email=None)
    guest_order = await f.place_order(anonymous, [(v, 1)], email="guest@example.com")
    everything = [*ann_orders, bob_order, guest_order]

    numbers = [o["number"] for o in everything]
    assert len(set(numbers)) == 4
    assert all(n.isdigit() and len(n) <= 8 for n in numbers), numbers

    mine = (await ann(MY_ORDERS, {}))["data"]["me"]["orders"]
    assert mine["totalCount"] == 2
    assert [e["node"]["id"] for e in mine["edges"]] == [ann_orders[1]["id"], ann_orders[0]["id"]]

    visible = {
        "ann": (ann, {o["id"] for o in ann_orders}),
        "bob": (bob, {bob_order["id"]}),
        "anonymous": (anonymous, set()),
        "clerk": (clerk, {o["id"] for o in everything}),
    }
    for who, (gql, own) in visible.items():
        for order in everything:
            data = (await gql(ORDER_BY_ID, {"id": order["id"]}))["data"]
            if order["id"] in own:
                assert data["order"] == {k: order[k] for k in ("id", "number", "email")}, who
                assert data["node"] == {"id": order["id"], "number": order["number"]}
                assert data["nodes"] == [{"id": order["id"]}]
            else:
                assert data == {"order": None, "node": None, "nodes": [None]}, (who, order)
    assert (await anonymous(MY_ORDERS, {}))["data"] == {"me": None}
    staff_view = (await clerk(ORDERS, {"filter": {"customer": "ann@"}}))["data"]["orders"]
    assert staff_view["totalCount"] == 2


async def test_user_orders_need_the_owner_or_manage_orders(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    ann_id, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    _, admin = await f.add_signed_in_customer(
        fresh_db, http, "admin@example.com", is_staff=True, permissions=["MANAGE_STAFF"]
    )
    clerk = await signed_in_clerk(fresh_db, http)
    order = await f.place_order(ann, [(v, 1)], email=None)
    query = """query($id: ID!) { node(id: $id) { ... on User { email
      orders { totalCount nodes { id } } } } }"""
    variables = {"id": f.gid("User", ann_id)}
    # MANAGE_STAFF sees the user, not the orders (order(id:) hides them from it too).
    assert (await admin(ORDER_BY_ID, {"id": order["id"]}))["data"]["order"] is None
    body = await admin(query, variables, errors=True)
    assert f.top_codes(body) == ["FORBIDDEN"]
    assert body["data"]["node"] is None
    expected = {
        "email": "ann@example.com",
        "orders": {"totalCount": 1, "nodes": [{"id": order["id"]}]},
    }
    assert (await clerk(query, variables))["data"]["node"] == expected
    assert (await ann(query, variables))["data"]["node"] == expected


async def test_order_history_survives_unpublishing_a_product(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    _, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    order = await f.place_order(ann, [(v, 1)], email=None)
    await f.set_product_of(fresh_db, v, is_published=False)
    body = await ann(
        "{ me { orders { nodes { number lines { productName sku variant { sku product { name } } }"
        " } } } }"
    )
    [node] = body["data"]["me"]["orders"]["nodes"]
    assert node["number"] == order["number"]
    [line] = node["lines"]
    assert (line["productName"], line["sku"]) == (
        order["lines"][0]["productName"],
        order["lines"][0]["sku"],
    )


async def test_my_orders_page_newest_first(fresh_db: Database, http: httpx.AsyncClient) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    ann_id, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    bob_id = await f.add_customer(fresh_db, "bob@example.com")
    base = datetime(2025, 6, 1, tzinfo=UTC)
    mine = [
        await f.insert_order(
            fresh_db, user_id=ann_id, email="ann@example.com", lines=[(v, 1)],
            created_at=base + timedelta(hours=h),
        )
        for h in (5, 1, 3, 3, 9, 0, 7)
    ]  # fmt: skip
    await f.insert_order(fresh_db, user_id=bob_id, email="bob@example.com", lines=[(v, 1)])
    hours = dict(zip(mine, (5, 1, 3, 3, 9, 0, 7), strict=True))
    expected = [f.gid("Order", i) for i in sorted(mine, key=lambda i: (hours[i], i), reverse=True)]

    seen: list[str] = []
    cursor = None
    while True:
        page = (await ann(MY_ORDERS, {"first": 3, "after": cursor}))["data"]["me"]["orders"]
        assert page["totalCount"] == 7
        seen += [e["node"]["id"] for e in page["edges"]]
        cursor = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert seen == expected
    back = (await ann(MY_ORDERS, {"last": 2}))["data"]["me"]["orders"]
    assert [e["node"]["id"] for e in back["edges"]] == expected[-2:]
    body = await ann(MY_ORDERS, {"last": 2, "before": back["pageInfo"]["startCursor"]})
    before = body["data"]["me"]["orders"]
    assert [e["node"]["id"] for e in before["edges"]] == expected[-4:-2]


# ------------------------------------------------------------------------------ staff listing


@dataclass(frozen=True)
class Row:
    id: int
    email: str
    name: str
    total: int
    status: str
    payment_status: str
    created_at: datetime


BASE = datetime(2025, 3, 1, 12, tzinfo=UTC)
CUSTOMERS = {  # email: (first name, last name)
    "ann@example.com": ("Ann", "Lee"),
    "bob@example.org": ("Bob", "Stone"),
    "cat@example.net": ("Catherine", "Annan"),
}
# email, quantity (x 10.00), status, payment status, hours after BASE
ORDER_ROWS = [
    ("ann@example.com", 2, "UNFULFILLED", "PAID", 0),
    ("ann@example.com", 5, "FULFILLED", "PAID", 1),
    ("bob@example.org", 3, "CANCELED", "REFUNDED", 2),
    ("bob@example.org", 2, "UNFULFILLED", "PAID", 3),
    ("cat@example.net", 9, "PARTIALLY_FULFILLED", "PARTIALLY_REFUNDED", 4),
    ("guest_1@example.com", 1, "UNFULFILLED", "PENDING", 5),
    ("guestx1@example.com", 1, "UNFULFILLED", "FAILED", 6),
    ("ann@example.com", 4, "UNFULFILLED", "PAID", 3),  # same time as bob's second
]


async def _orders_to_list(db: Database) -> list[Row]:
    [v] = await f.stock_variants(db, 1)
    user_ids = {
        email: await f.add_customer(db, email, first_name=first, last_name=last)
        for email, (first, last) in CUSTOMERS.items()
    }
    rows = []
    for email, quantity, status, payment_status, hours in ORDER_ROWS:
        when = BASE + timedelta(hours=hours)
        order_id = await f.insert_order(
            db, user_id=user_ids.get(email), email=email, lines=[(v, quantity)],
            status=status, payment_status=payment_status, created_at=when,
        )  # fmt: skip
        first, last = CUSTOMERS.get(email, ("", ""))
        rows.append(
            Row(order_id, email, f"{first} {last}", quantity * 1000, status, payment_status, when)
        )
    return rows


def _sorted(rows: list[Row], field: str, direction: str) -> list[str]:
    key = {
        "NUMBER": lambda r: (r.id,),
        "CREATED_AT": lambda r: (r.created_at, r.id),
        "TOTAL": lambda r: (r.total, r.id),
    }[field]
    ordered = sorted(rows, key=key, reverse=direction == "DESC")
    return [f.gid("Order", r.id) for r in ordered]


async def _walk(gql: f.GraphQL, variables: dict[str, Any], size: int, backward: bool) -> list[str]:
    """Every order of a listing, page by page (cursor keyset), in listing order."""
    seen: list[list[str]] = []
    cursor: str | None = None
    for _ in range(50):
        args = {"last": size, "before": cursor} if backward else {"first": size, "after": cursor}
        page = (await gql(ORDERS, {**variables, **args}))["data"]["orders"]
        ids = [e["node"]["id"] for e in page["edges"]]
        seen.append(ids)
        info = page["pageInfo"]
        more = info["hasPreviousPage"] if backward else info["hasNextPage"]
        if not more:
            break
        assert len(ids) == size
        cursor = info["startCursor"] if backward else info["endCursor"]
    if backward:
        seen.reverse()
    return [i for ids in seen for i in ids]


async def test_staff_list_all_orders_in_every_sort_order(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    rows = await _orders_to_list(fresh_db)
    clerk = await signed_in_clerk(fresh_db, http)
    default = (await clerk(ORDERS, {}))["data"]["orders"]
    assert default["totalCount"] == len(rows)
    assert [e["node"]["id"] for e in default["edges"]] == _sorted(rows, "CREATED_AT", "DESC")
    by_id = {f.gid("Order", r.id): r for r in rows}
    for edge in default["edges"]:
        row = by_id[edge["node"]["id"]]
        assert edge["node"]["number"] == str(10_000 + row.id)
        assert f.minor(edge["node"]["total"]["amount"]) == row.total
    for field in ("NUMBER", "CREATED_AT", "TOTAL"):
        for direction in ("ASC", "DESC"):
            expected = _sorted(rows, field, direction)
            sort = {"sortBy": {"field": field, "direction": direction}}
            for size, backward in ((3, False), (2, True), (100, False)):
                assert await _walk(clerk, sort, size, backward) == expected, (
                    field, direction, size, backward,
                )  # fmt: skip
    # Keyset cursors: an order placed while paging does not shift the next page.
    newest_first = _sorted(rows, "CREATED_AT", "DESC")
    page = (await clerk(ORDERS, {"first": 3}))["data"]["orders"]
    assert [e["node"]["id"] for e in page["edges"]] == newest_first[:3]
    await f.insert_order(
        fresh_db, user_id=None, email="late@example.com", lines=[], created_at=BASE + timedelta(9)
    )
    after = {"first": 3, "after": page["pageInfo"]["endCursor"]}
    following = (await clerk(ORDERS, after))["data"]["orders"]
    assert [e["node"]["id"] for e in following["edges"]] == newest_first[3:6]
    assert following["totalCount"] == len(rows) + 1


def _case(rows: list[Row], name: str) -> tuple[dict[str, Any], list[Row]]:
    t = BASE + timedelta(hours=2)
    u = BASE + timedelta(hours=5)
    plus_two = timezone(timedelta(hours=2))
    cases: dict[str, tuple[dict[str, Any], Any]] = {
        "unfulfilled": ({"status": ["UNFULFILLED"]}, lambda r: r.status == "UNFULFILLED"),
        "canceled or fulfilled": (
            {"status": ["CANCELED", "FULFILLED"]},
            lambda r: r.status in ("CANCELED", "FULFILLED"),
        ),
        "paid": ({"paymentStatus": ["PAID"]}, lambda r: r.payment_status == "PAID"),
        "refunds": (
            {"paymentStatus": ["REFUNDED", "PARTIALLY_REFUNDED"]},
            lambda r: "REFUNDED" in r.payment_status,
        ),
        "no status": ({"status": []}, lambda r: False),
        "email or name, any case": (
            {"customer": "ANN"},
            lambda r: "ann" in r.email or "ann" in r.name.lower(),
        ),
        "last name": ({"customer": "lee"}, lambda r: r.name == "Ann Lee"),
        "full name": ({"customer": " ann LEE "}, lambda r: r.name == "Ann Lee"),
        "email domain": ({"customer": "@Example.ORG"}, lambda r: r.email.endswith(".org")),
        "underscore is literal": ({"customer": "t_1"}, lambda r: r.email.startswith("guest_")),
        "percent is literal": ({"customer": "%"}, lambda r: False),
        "nobody": ({"customer": "zzz"}, lambda r: False),
        "time window (inclusive, any offset)": (
            {"createdGte": t.astimezone(plus_two).isoformat(), "createdLte": u.isoformat()},
            lambda r: t <= r.created_at <= u,
        ),
        "everything at once": (
            {"status": ["UNFULFILLED"], "paymentStatus": ["PAID", "PENDING"],
             "customer": "example.com", "createdGte": t.isoformat()},
            lambda r: r.status == "UNFULFILLED" and r.payment_status in ("PAID", "PENDING")
            and "example.com" in r.email and r.created_at >= t,
        ),
    }  # fmt: skip
    order_filter, keep = cases[name]
    return order_filter, [r for r in rows if keep(r)]


FILTER_CASES = [
    "unfulfilled", "canceled or fulfilled", "paid", "refunds", "no status",
    "email or name, any case", "last name", "full name", "email domain",
    "underscore is literal", "percent is literal", "nobody",
    "time window (inclusive, any offset)", "everything at once",
]  # fmt: skip


async def test_staff_filter_orders(fresh_db: Database, http: httpx.AsyncClient) -> None:
    rows = await _orders_to_list(fresh_db)
    clerk = await signed_in_clerk(fresh_db, http)
    for name in FILTER_CASES:
        order_filter, matching = _case(rows, name)
        assert matching or name in ("no status", "percent is literal", "nobody")
        body = await clerk(ORDERS, {"filter": order_filter})
        assert body["data"]["orders"]["totalCount"] == len(matching), name
        for field, direction in (("CREATED_AT", "DESC"), ("TOTAL", "ASC")):
            variables = {"filter": order_filter, "sortBy": {"field": field, "direction": direction}}
            assert await _walk(clerk, variables, 2, False) == _sorted(matching, field, direction), (
                name
            )


async def test_orders_listing_needs_manage_orders(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    [v] = await f.stock_variants(fresh_db, 1)
    _, ann = await f.add_signed_in_customer(fresh_db, http, "ann@example.com")
    _, editor = await f.add_signed_in_customer(
        fresh_db, http, "editor@example.com", is_staff=True, permissions=["MANAGE_PRODUCTS"]
    )
    await f.place_order(ann, [(v, 1)], email=None)
    for gql, code in (
        (ann, "FORBIDDEN"),
        (editor, "FORBIDDEN"),
        (f.caller(http), "UNAUTHENTICATED"),
    ):
        body = await gql("{ orders { totalCount edges { node { id email } } } }", errors=True)
        assert f.top_codes(body) == [code]
        assert body["data"] is None


async def test_bad_listing_arguments_are_bad_user_input(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    clerk = await signed_in_clerk(fresh_db, http)
    for variables in (
        {"first": 101},
        {"first": -1},
        {"after": "not-a-cursor"},
        {"filter": {"createdGte": "2025-01-01T00:00:00"}},  # no UTC offset
        {"filter": {"customer": "x" * 300}},
    ):
        body = await clerk(ORDERS, variables, errors=True)
        assert f.top_codes(body) == ["BAD_USER_INPUT"], variables
    # A cursor of one sort order is not accepted by another.
    page = (await clerk(ORDERS, {"first": 1}))["data"]["orders"]
    assert page["edges"] == []
    await f.insert_order(fresh_db, user_id=None, email="a@example.com", lines=[])
    await f.insert_order(fresh_db, user_id=None, email="b@example.com", lines=[])
    cursor = (await clerk(ORDERS, {"first": 1}))["data"]["orders"]["pageInfo"]["endCursor"]
    body = await clerk(
        ORDERS,
        {"first": 1, "after": cursor, "sortBy": {"field": "TOTAL", "direction": "ASC"}},
        errors=True,
    )
    assert f.top_codes(body) == ["BAD_USER_INPUT"]


# ------------------------------------------------------------------------------ SQL counts

MY_ORDER_TREE = """{ me { orders(first: 20) { edges { node { number total { amount }
  lines { productName variant { sku product { name } } } payments { status } } } } } }"""


async def test_my_orders_run_the_same_statements_for_1_or_25_orders(
    fresh_db: Database, http: httpx.AsyncClient
) -> None:
    found = await f.stock_variants(fresh_db, 30)
    _, one = await f.add_signed_in_customer(fresh_db, http, "one@example.com")
    many_id, many = await f.add_signed_in_customer(fresh_db, http, "many@example.com")
    await f.place_order(one, [(found[0], 1), (found[1], 2)], email=None)
    await f.place_order(many, [(found[2], 1)], email=None)  # a real one among them
    for i in range(24):
        await f.insert_order(
            fresh_db, user_id=many_id, email="many@example.com",
            lines=[(found[i], 1), (found[i + 1], 2), (found[i + 5], 1)],
        )  # fmt: skip
    counts = []
    for gql, orders in ((one, 1), (many, 20)):
        body = await gql(MY_ORDER_TREE)
        edges = body["data"]["me"]["orders"]["edges"]
        assert len(edges) == orders
        assert all(line["variant"]["product"]["name"] for e in edges for line in e["node"]["lines"])
        counts.append(body["extensions"]["sql"]["count"])
    print(f"me.orders(first: 20) SQL statements: 1 order {counts[0]}, 20 orders {counts[1]}")
    assert counts[0] == counts[1], counts
