"""`node(id:)` / `nodes(ids:)` for the staff types: AuditEntry, Fulfillment, PromoCode,
Webhook and WebhookDelivery, with exactly the visibility of the typed fields that show them:

- AuditEntry (`auditLog`), Webhook (`webhooks`), WebhookDelivery (`webhookDeliveries`):
  MANAGE_STAFF;
- PromoCode (`promoCodes`): MANAGE_DISCOUNTS;
- Fulfillment (`Order.fulfillments`): where its order is visible, i.e. the order's owner,
  or MANAGE_ORDERS (`order(id:)`).

Anyone else gets null, no error, exactly what a nonexistent ID gets; malformed IDs stay
BAD_USER_INPUT, and `nodes` runs the same statements for 2 IDs as for 20.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import add_user, call, error_codes, gid, mint_token
from checkout_flow import add_promo, insert_order, stock_variants
from conftest import make_client

from models.accounts.tables import PERMISSIONS
from models.db import Database, utcnow
from models.webhooks.tables import webhook_attempts, webhook_deliveries
from resolvers import ids as global_ids

COUNT = 20
TYPES = ("AuditEntry", "Fulfillment", "PromoCode", "Webhook", "WebhookDelivery")
# The permission each type needs, as its typed field does.
NEEDS = {
    "AuditEntry": "MANAGE_STAFF",
    "Fulfillment": "MANAGE_ORDERS",
    "PromoCode": "MANAGE_DISCOUNTS",
    "Webhook": "MANAGE_STAFF",
    "WebhookDelivery": "MANAGE_STAFF",
}
# What each type shows, nested fields (loaded through further loaders) included.
FIELDS = {
    "AuditEntry": "id actor { id email } actorEmail action objectType objectId changedFields"
    " createdAt",
    "Fulfillment": "id trackingNumber createdAt lines { quantity orderLine { id sku quantity } }",
    "PromoCode": "id code kind value currency minSubtotal { amount currency } startsAt endsAt"
    " usageLimit usedCount oncePerCustomer createdAt updatedAt",
    "Webhook": "id url events isActive secretSet createdAt updatedAt"
    " deliveries(first: 5) { totalCount nodes { id status } }",
    "WebhookDelivery": "id webhook { id url } event status attempts lastStatusCode lastError"
    " createdAt deliveredAt nextAttemptAt payload"
    " attemptLog { attempt statusCode error durationMs createdAt }",
}
# The typed field that lists each type (as the staff member with the permission sees it).
TYPED = {
    "AuditEntry": "{ auditLog(first: 100) { nodes { %s } } }",
    "Fulfillment": "query($order: ID!) { order(id: $order) { fulfillments { %s } } }",
    "PromoCode": "{ promoCodes(first: 100) { nodes { %s } } }",
    "Webhook": "{ webhooks { %s } }",
    "WebhookDelivery": "{ webhookDeliveries(first: 100) { nodes { %s } } }",
}
NODE = "query($id: ID!) { node(id: $id) { __typename ... on %s { %s } } }"
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename ... on %s { %s } } }"
NODE_ID = "query($id: ID!) { node(id: $id) { id } }"
NODES_ID = "query($ids: [ID!]!) { nodes(ids: $ids) { id __typename } }"
MISSING_KEY = 999_999


@dataclass
class Shop:
    db: Database
    client: httpx.AsyncClient
    tokens: dict[str, str | None]
    ids: dict[str, list[str]]  # type -> global IDs of COUNT objects (all of A's or staff's)
    order_a: str  # customer A's order: every Fulfillment in ids["Fulfillment"] is of it
    order_b: str  # customer B's order, with one fulfillment
    fulfillment_b: str
    products: list[str]

    async def call(
        self, viewer: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await call(self.client, query, variables, token=self.tokens[viewer])

    async def ok(
        self, viewer: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = await self.call(viewer, query, variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def typed(self, type_name: str) -> list[dict[str, Any]]:
        """Every object of `type_name` as its typed field shows it to the admin."""
        query = TYPED[type_name] % FIELDS[type_name]
        if type_name == "Fulfillment":
            data = await self.ok("admin", query, {"order": self.order_a})
            found: list[dict[str, Any]] = data["order"]["fulfillments"]
            return found
        (value,) = (await self.ok("admin", query)).values()
        found = value if isinstance(value, list) else value["nodes"]
        return found


async def _fulfil_each_line(client: httpx.AsyncClient, token: str, order: str) -> list[str]:
    """One orderFulfill per line of `order` (so one fulfillment each); their IDs."""
    body = await call(
        client, "query($id: ID!) { order(id: $id) { lines { id } } }", {"id": order}, token=token
    )
    lines = [line["id"] for line in body["data"]["order"]["lines"]]
    fulfil = """mutation($id: ID!, $lines: [OrderFulfillLineInput!], $t: String) {
      orderFulfill(id: $id, lines: $lines, trackingNumber: $t) {
        order { fulfillments { id } } errors { code } } }"""
    for n, line in enumerate(lines):
        variables = {"id": order, "lines": [{"orderLineId": line, "quantity": 1}], "t": f"TR{n}"}
        body = await call(client, fulfil, variables, token=token)
        assert "errors" not in body and body["data"]["orderFulfill"]["errors"] == [], body
    found = body["data"]["orderFulfill"]["order"]["fulfillments"]
    return [f["id"] for f in found]


async def _webhooks(client: httpx.AsyncClient, token: str) -> list[str]:
    create = """mutation($input: WebhookCreateInput!) {
      webhookCreate(input: $input) { webhook { id } errors { code } } }"""
    found = []
    for n in range(COUNT):
        variables = {
            "input": {
                "url": f"http://127.0.0.1:9/hook/{n}",
                "events": ["VARIANT_STOCK_CHANGED", "ORDER_CREATED"][: 1 + n % 2],
                "secret": "whsec_node_test_0123456789",
                "isActive": n % 3 != 0,
            }
        }
        body = await call(client, create, variables, token=token)
        assert "errors" not in body and body["data"]["webhookCreate"]["errors"] == [], body
        found.append(body["data"]["webhookCreate"]["webhook"]["id"])
    return found


async def _deliveries(db: Database, webhook_keys: list[int]) -> list[str]:
    """COUNT delivery rows (pending, delivered and failed, some with attempts)."""
    now = utcnow()
    found = []
    async with db.transaction() as conn:
        for n in range(COUNT):
            status = ("PENDING", "DELIVERED", "FAILED")[n % 3]
            result = await conn.execute(
                sa.insert(webhook_deliveries)
                .values(
                    webhook_id=webhook_keys[n % len(webhook_keys)],
                    event="VARIANT_STOCK_CHANGED",
                    payload=json.dumps({"variantIds": [gid("ProductVariant", n + 1)]}),
                    status=status,
                    attempts=n % 3,
                    next_attempt_at=now + timedelta(minutes=n),
                    expires_at=now + timedelta(hours=24),
                    last_status_code=500 if n % 3 else None,
                    last_error="HTTP 500" if n % 3 else None,
                    created_at=now - timedelta(seconds=n),
                    delivered_at=now if status == "DELIVERED" else None,
                )
                .returning(webhook_deliveries.c.id)
            )
            key = int(result.scalar_one())
            for attempt in range(1, n % 3 + 1):
                await conn.execute(
                    sa.insert(webhook_attempts).values(
                        delivery_id=key, attempt=attempt, status_code=500,
                        error="HTTP 500", duration_ms=10 * attempt, created_at=now,
                    )
                )  # fmt: skip
            found.append(gid("WebhookDelivery", key))
    return found


@pytest.fixture
async def shop(fresh_db: Database) -> AsyncIterator[Shop]:
    users = {
        "A": await add_user(fresh_db, "a@example.com"),
        "B": await add_user(fresh_db, "b@example.com"),
        "admin": await add_user(
            fresh_db, "admin@example.com", is_staff=True, permissions=PERMISSIONS
        ),
    }
    # Staff holding every permission but one: "no MANAGE_STAFF", ...
    for permission in sorted(set(NEEDS.values())):
        users[f"no {permission}"] = await add_user(
            fresh_db,
            f"no-{permission.lower()}@example.com",
            is_staff=True,
            permissions=[p for p in PERMISSIONS if p != permission],
        )
    tokens: dict[str, str | None] = {"anon": None}
    for name, user_id in users.items():
        tokens[name] = await mint_token(fresh_db, user_id)
    variants = await stock_variants(fresh_db, COUNT)
    order_a = await insert_order(
        fresh_db, user_id=users["A"], email="a@example.com", lines=[(v, 2) for v in variants]
    )
    order_b = await insert_order(
        fresh_db, user_id=users["B"], email="b@example.com", lines=[(variants[0], 1)]
    )
    for n in range(COUNT):
        await add_promo(
            fresh_db, f"NODE{n:02d}", kind=("PERCENTAGE", "FIXED")[n % 2], value=150 + n,
            min_subtotal=100 * n, usage_limit=n or None, used_count=n // 2,
            once_per_customer=n % 2 == 0, ends_at=utcnow() + timedelta(days=n + 1),
        )  # fmt: skip
    async with make_client(fresh_db, webhook_allow_private=True, webhook_worker=False) as client:
        admin = tokens["admin"]
        assert admin is not None
        fulfillments = await _fulfil_each_line(client, admin, gid("Order", order_a))
        (fulfillment_b,) = await _fulfil_each_line(client, admin, gid("Order", order_b))
        hooks = await _webhooks(client, admin)
        deliveries = await _deliveries(fresh_db, [int(global_ids.decode_any(h)[1]) for h in hooks])
        body = await call(client, "{ promoCodes(first: 100) { nodes { id } } }", token=admin)
        promos = [p["id"] for p in body["data"]["promoCodes"]["nodes"]][:COUNT]
        body = await call(client, "{ auditLog(first: 20) { nodes { id } } }", token=admin)
        audit = [e["id"] for e in body["data"]["auditLog"]["nodes"]]
        body = await call(client, "{ products(first: 20) { nodes { id } } }")
        products = [p["id"] for p in body["data"]["products"]["nodes"]]
        ids = {
            "AuditEntry": audit,
            "Fulfillment": fulfillments,
            "PromoCode": promos,
            "Webhook": hooks,
            "WebhookDelivery": deliveries,
        }
        assert all(len(found) == COUNT for found in ids.values()), ids
        yield Shop(
            db=fresh_db,
            client=client,
            tokens=tokens,
            ids=ids,
            order_a=gid("Order", order_a),
            order_b=gid("Order", order_b),
            fulfillment_b=fulfillment_b,
            products=products,
        )


# ------------------------------------------------------------------------ who sees what


async def test_staff_with_the_permission_get_what_the_typed_field_shows(shop: Shop) -> None:
    for type_name in TYPES:
        expected = {obj["id"]: obj for obj in await shop.typed(type_name)}
        assert set(shop.ids[type_name]) <= set(expected), type_name
        fields = FIELDS[type_name]
        for global_id in shop.ids[type_name][:3]:
            data = await shop.ok("admin", NODE % (type_name, fields), {"id": global_id})
            assert data["node"] == {"__typename": type_name, **expected[global_id]}, type_name
        data = await shop.ok("admin", NODES % (type_name, fields), {"ids": shop.ids[type_name]})
        assert data["nodes"] == [
            {"__typename": type_name, **expected[i]} for i in shop.ids[type_name]
        ], type_name
        # The staff member holding only the one permission needed sees the same.
        holder = await add_user(
            shop.db, f"only-{type_name.lower()}@example.com", is_staff=True,
            permissions=[NEEDS[type_name]],
        )  # fmt: skip
        shop.tokens[f"only {type_name}"] = await mint_token(shop.db, holder)
        data = await shop.ok(f"only {type_name}", NODES_ID, {"ids": shop.ids[type_name]})
        assert [n["id"] for n in data["nodes"]] == shop.ids[type_name], type_name


def _blind_viewers(type_name: str) -> list[str]:
    """Who may not see any object of `type_name` in the fixture's `ids`."""
    viewers = ["anon", "B", f"no {NEEDS[type_name]}"]
    if type_name != "Fulfillment":
        viewers.append("A")  # A owns the order of ids["Fulfillment"]
    return viewers


async def test_viewers_without_the_permission_get_null_and_no_hint(shop: Shop) -> None:
    cases = 0
    for type_name in TYPES:
        missing = gid(type_name, MISSING_KEY)
        fields = FIELDS[type_name]
        for viewer in _blind_viewers(type_name):
            for global_id in shop.ids[type_name][:2]:
                seen = await shop.call(viewer, NODE % (type_name, fields), {"id": global_id})
                unseen = await shop.call(viewer, NODE % (type_name, fields), {"id": missing})
                assert "errors" not in seen, (type_name, viewer, seen["errors"])
                # Exactly what a nonexistent ID answers: nothing tells them it exists.
                assert seen["data"] == unseen["data"] == {"node": None}, (type_name, viewer)
                cases += 1
            body = await shop.call(viewer, NODES_ID, {"ids": [*shop.ids[type_name], missing]})
            assert "errors" not in body, (type_name, viewer, body["errors"])
            assert body["data"]["nodes"] == [None] * (COUNT + 1), (type_name, viewer)
            cases += 1
    print(f"blind viewers: {cases} cases")
    assert cases == 3 * (4 * 4 + 3)


async def test_a_fulfillment_is_visible_where_its_order_is(shop: Shop) -> None:
    """`Order.fulfillments`' rule: the order's owner (even staff without MANAGE_ORDERS,
    for their own order), or MANAGE_ORDERS; nobody else."""
    mine, theirs = shop.ids["Fulfillment"][0], shop.fulfillment_b
    expected = {
        "A": [mine, None],
        "B": [None, theirs],
        "admin": [mine, theirs],
        "no MANAGE_ORDERS": [None, None],
        "anon": [None, None],
    }
    for viewer, visible in expected.items():
        data = await shop.ok(viewer, NODES_ID, {"ids": [mine, theirs]})
        assert [n and n["id"] for n in data["nodes"]] == visible, viewer
        # ... which is what the typed field shows them: the order, with its fulfillments.
        for order, fulfillment in ((shop.order_a, mine), (shop.order_b, theirs)):
            data = await shop.ok(viewer, TYPED["Fulfillment"] % "id", {"order": order})
            shown = [f["id"] for f in data["order"]["fulfillments"]] if data["order"] else []
            assert (fulfillment in shown) == (fulfillment in visible), (viewer, order)
    data = await shop.ok("A", NODE % ("Fulfillment", FIELDS["Fulfillment"]), {"id": mine})
    typed = await shop.ok(
        "A", TYPED["Fulfillment"] % FIELDS["Fulfillment"], {"order": shop.order_a}
    )
    assert data["node"] == {"__typename": "Fulfillment", **typed["order"]["fulfillments"][0]}


async def test_nonexistent_ids_are_null(shop: Shop) -> None:
    for type_name in TYPES:
        missing = [gid(type_name, MISSING_KEY), gid(type_name, 2**31 - 1), gid(type_name, 2**40)]
        for global_id in missing:
            assert await shop.ok("admin", NODE_ID, {"id": global_id}) == {"node": None}
        data = await shop.ok("admin", NODES_ID, {"ids": [missing[0], shop.ids[type_name][0]]})
        assert data["nodes"][0] is None and data["nodes"][1]["id"] == shop.ids[type_name][0]


async def test_a_deleted_object_is_null(shop: Shop) -> None:
    hook = shop.ids["Webhook"][0]
    body = await shop.ok(
        "admin", "mutation($id: ID!) { webhookDelete(id: $id) { deletedId } }", {"id": hook}
    )
    assert body["webhookDelete"]["deletedId"] == hook
    deliveries = shop.ids["WebhookDelivery"][:: len(shop.ids["Webhook"])]  # the hook's
    data = await shop.ok("admin", NODES_ID, {"ids": [hook, *deliveries, shop.ids["Webhook"][1]]})
    assert data["nodes"][:-1] == [None] * (1 + len(deliveries))
    assert data["nodes"][-1]["id"] == shop.ids["Webhook"][1]


async def test_nodes_mixing_types_keeps_the_order_asked(shop: Shop) -> None:
    asked: list[tuple[str, str | None]] = []
    for n in range(3):
        asked.append(("Product", shop.products[n]))
        for type_name in TYPES:
            asked.append((type_name, shop.ids[type_name][n]))
        asked.append(("Order", shop.order_a))  # asked again: the same object again
        asked.append(("missing", gid(TYPES[n], MISSING_KEY)))
    asked.append(("Webhook", shop.ids["Webhook"][0]))  # a repeat of the first
    body = await shop.ok("admin", NODES_ID, {"ids": [i for _, i in asked]})
    got = [(n["__typename"], n["id"]) if n else ("missing", None) for n in body["nodes"]]
    assert got == [(t, None if t == "missing" else i) for t, i in asked]
    # For a viewer who may see none of the staff types, only the others keep their place.
    body = await shop.ok("B", NODES_ID, {"ids": [i for _, i in asked]})
    seen = [(n["__typename"], n["id"]) if n else None for n in body["nodes"]]
    assert seen == [(t, i) if t == "Product" else None for t, i in asked]


# --------------------------------------------------------------------------- bad input


async def test_these_ids_where_another_type_is_expected_are_still_errors(shop: Shop) -> None:
    hook, delivery = shop.ids["Webhook"][0], shop.ids["WebhookDelivery"][0]
    promo, entry, fulfillment = (shop.ids[t][0] for t in ("PromoCode", "AuditEntry", "Fulfillment"))
    top_level: list[tuple[str, dict[str, Any]]] = [
        ("query($id: ID!) { order(id: $id) { id } }", {"id": fulfillment}),
        ("query($id: ID!) { product(id: $id) { id } }", {"id": hook}),
        ("query($id: ID!) { variant(id: $id) { id } }", {"id": promo}),
        ("query($id: ID!) { checkout(id: $id) { id } }", {"id": entry}),
        (
            "query($f: WebhookDeliveryFilter) { webhookDeliveries(filter: $f) { totalCount } }",
            {"f": {"webhookId": delivery}},
        ),
        (
            "query($f: AuditLogFilter) { auditLog(filter: $f) { totalCount } }",
            {"f": {"actorId": entry}},
        ),
    ]
    for query, variables in top_level:
        body = await shop.call("admin", query, variables)
        assert error_codes(body) == ["BAD_USER_INPUT"], (query, body)
    payloads = [
        ("webhookUpdate", "mutation($id: ID!) { webhookUpdate(id: $id, input: {isActive: true}) { errors { field code } } }", delivery),
        ("webhookDeliveryRetry", "mutation($id: ID!) { webhookDeliveryRetry(id: $id) { errors { field code } } }", hook),
        ("promoCodeUpdate", "mutation($id: ID!) { promoCodeUpdate(id: $id, input: {usageLimit: 5}) { errors { field code } } }", entry),
        ("promoCodeDelete", "mutation($id: ID!) { promoCodeDelete(id: $id) { errors { field code } } }", fulfillment),
        ("orderFulfill", "mutation($id: ID!) { orderFulfill(id: $id) { errors { field code } } }", promo),
    ]  # fmt: skip
    for name, query, value in payloads:
        data = await shop.ok("admin", query, {"id": value})
        assert data[name]["errors"] == [{"field": "id", "code": "INVALID"}], (name, data)


HOSTILE = {
    "very long": gid("Webhook", 1) * 400,
    "long valid base64": base64.b64encode(b"Webhook:" + b"1" * 150).decode(),
    "unicode": "V2ViaG9vazox💥ñ",
    "non-ascii key": base64.b64encode("Webhook:1\u00e9".encode()).decode(),
    "not base64": "!!!not*base64???",
    "base64 garbage bytes": base64.b64encode(bytes(range(200, 240))).decode(),
    "no separator": base64.b64encode(b"Webhook1").decode(),
    "no key": base64.b64encode(b"WebhookDelivery:").decode(),
    "negative key": base64.b64encode(b"PromoCode:-1").decode(),
    "zero key": base64.b64encode(b"AuditEntry:0").decode(),
    "leading zero": base64.b64encode(b"Fulfillment:01").decode(),
    "decimal key": base64.b64encode(b"AuditEntry:1.5").decode(),
    "sql in key": base64.b64encode(b"Webhook:1 OR 1=1").decode(),
    "nul in key": base64.b64encode(b"WebhookDelivery:1\x00").decode(),
    "unknown type": base64.b64encode(b"WebhookSecret:1").decode(),
    "lower-case type": base64.b64encode(b"webhook:1").decode(),
    "key beyond int64": base64.b64encode(b"Webhook:99999999999999999999").decode(),
    "empty": "",
    "padding only": "====",
}


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_ids_are_bad_user_input(shop: Shop, value: str) -> None:
    for viewer in ("admin", "anon"):
        body = await shop.call(viewer, NODE_ID, {"id": value})
        assert body["data"] == {"node": None}, body
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        body = await shop.call(viewer, NODES_ID, {"ids": [shop.ids["Webhook"][0], value]})
        assert body["data"] is None, body
        assert error_codes(body) == ["BAD_USER_INPUT"], body
        assert all("Traceback" not in e["message"] for e in body["errors"])


# ------------------------------------------------------------------------ statements


async def _statements(shop: Shop, viewer: str, query: str, ids: list[str]) -> int:
    body = await shop.call(viewer, query, {"ids": ids})
    assert "errors" not in body, body["errors"]
    assert len(body["data"]["nodes"]) == len(ids)
    count = body["extensions"]["sql"]["count"]
    assert isinstance(count, int)
    return count


async def test_nodes_runs_the_same_statements_for_2_and_20_ids(shop: Shop) -> None:
    measured: dict[str, tuple[int, int]] = {}
    for type_name in TYPES:
        query = NODES % (type_name, FIELDS[type_name])
        few = await _statements(shop, "admin", query, shop.ids[type_name][:2])
        many = await _statements(shop, "admin", query, shop.ids[type_name])
        measured[type_name] = (few, many)
        assert few == many, (type_name, few, many)
    fragments = " ".join(f"... on {t} {{ {FIELDS[t]} }}" for t in TYPES)
    mixed = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ __typename {fragments} ... on Product {{ name }} }} }}"

    def mix(n: int) -> list[str]:
        return [i for t in TYPES for i in shop.ids[t][:n]] + shop.products[:n]

    measured["mixed"] = (
        await _statements(shop, "admin", mixed, mix(2)),
        await _statements(shop, "admin", mixed, mix(16)),
    )
    assert measured["mixed"][0] == measured["mixed"][1], measured
    # A viewer who may not see a type reads nothing for it: the same statements as for no
    # IDs at all (the permission is decided before any fetch).
    baseline = await _statements(shop, "no MANAGE_STAFF", NODES_ID, [])
    for type_name in ("AuditEntry", "PromoCode", "Webhook", "WebhookDelivery"):
        viewer = f"no {NEEDS[type_name]}"
        assert await _statements(shop, viewer, NODES_ID, shop.ids[type_name]) == baseline
    print(f"statements (2 ids, 20 ids): {measured}; blind viewer: {baseline}")
