"""GraphQL subscriptions over WebSocket (`graphql-transport-ws`) against a real `shopql
serve`: sign-in in connection_init, per-subscription authorization, fresh data per event,
visibility, re-checked tokens, origins, the per-connection cap, the active-subscriptions
gauge, and malformed input."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import websockets
from accounts_factory import PASSWORD, add_user, gid, mint_token, sign_in
from checkout_flow import insert_order, place_order, set_product_of
from conftest import DatabaseFactory
from live_server import LiveServer, live_server
from prometheus_client.parser import text_string_to_metric_families
from ws_client import acked, connect

from models.accounts.tables import auth_sessions
from models.catalog.tables import products
from models.catalog.tables import variants as variants_table
from models.db import Database

ALLOWED_ORIGIN = "https://shop.example"
CAP = 3
STOCK = """subscription($ids: [ID!]!) {
  variantStockChanged(variantIds: $ids) { id quantityAvailable }
}"""
ORDER = """subscription($id: ID!) {
  orderUpdated(orderId: $id) { id status paymentStatus payments { status } }
}"""
CREATED = "subscription { orderCreated { id email total { amount } } }"
STOCK_UPDATE = """mutation($id: ID!, $q: Int!) {
  variantStockUpdate(id: $id, quantity: $q) { errors { code } }
}"""
CANCEL = "mutation($id: ID!) { orderCancel(id: $id) { errors { code message } } }"
REFUND = "mutation($id: ID!) { orderRefund(id: $id) { errors { code message } } }"
TOKEN_REVOKE = "mutation($t: String!) { tokenRevoke(refreshToken: $t) { errors { code } } }"


@pytest.fixture(scope="module")
def server(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    url = databases.copy()
    env = {
        "SHOPQL_CORS_ORIGINS": ALLOWED_ORIGIN,
        "SHOPQL_WS_MAX_SUBSCRIPTIONS": str(CAP),
        "SHOPQL_METRICS": "1",
        "SHOPQL_WEBHOOK_WORKER": "0",
    }
    try:
        with live_server(url, tmp_path_factory.mktemp("ws"), env=env) as running:
            yield running
        text = running.log_text()
        assert "Traceback" not in text, text[-4000:]
    finally:
        databases.drop(url)


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        yield client
        # Every subscription a test opened has ended on the server by now or shortly
        # after its socket closed: the gauge counts disconnects too.
        await wait_gauge(client, 0)


@pytest.fixture
async def db(server: LiveServer) -> AsyncIterator[Database]:
    database = Database(server.database_url)
    yield database
    await database.dispose()


# --------------------------------------------------------------------------- helpers


async def gauge(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "shopql_websocket_subscriptions_active":
            return float(family.samples[0].value)
    raise AssertionError("no subscriptions gauge")


async def wait_gauge(http: httpx.AsyncClient, value: float) -> None:
    """Until the server counts `value` open subscriptions (they then hear every event)."""
    deadline = time.monotonic() + 10
    while (current := await gauge(http)) != value:
        assert time.monotonic() < deadline, f"gauge stuck at {current}, expected {value}"
        await asyncio.sleep(0.02)


async def post(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str
) -> dict[str, Any]:
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}"},
    )
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    (payload,) = body["data"].values()
    assert payload["errors"] == [], payload
    return body


async def staff(db: Database, *permissions: str) -> str:
    user = await add_user(
        db, f"staff-{uuid.uuid4().hex[:8]}@example.com", is_staff=True, permissions=permissions
    )
    return await mint_token(db, user)


async def customer(db: Database) -> tuple[int, str]:
    user = await add_user(db, f"c-{uuid.uuid4().hex[:8]}@example.com")
    return user, await mint_token(db, user)


_blocks = iter(range(1000))


async def variants(db: Database, count: int) -> list[int]:
    """`count` published variants (of distinct products) no other test of this module
    uses, with stock."""
    skip = next(_blocks) * 4
    first = (
        sa.select(sa.func.min(variants_table.c.id))
        .join(products, products.c.id == variants_table.c.product_id)
        .where(products.c.is_published.is_(True))
        .group_by(variants_table.c.product_id)
        .scalar_subquery()
    )
    async with db.transaction() as conn:
        rows = await conn.execute(
            sa.select(variants_table.c.id)
            .where(variants_table.c.id.in_(first))
            .order_by(variants_table.c.id)
            .offset(skip)
            .limit(count)
        )
        found = [int(row[0]) for row in rows]
        await conn.execute(
            variants_table.update().where(variants_table.c.id.in_(found)).values(quantity=50)
        )
    assert len(found) == count
    return found


def vid(variant_id: int) -> str:
    return gid("ProductVariant", variant_id)


# --------------------------------------------------------------------------- stock


async def test_stock_changes_reach_anonymous_subscribers_fresh_and_filtered(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    a, b, c = await variants(db, 3)
    token = await staff(db, "MANAGE_PRODUCTS")
    ws = await acked(server)  # no connection_init payload: anonymous
    op = await ws.subscribe(STOCK, {"ids": [vid(a), vid(b)]})
    await wait_gauge(http, 1)

    await post(http, STOCK_UPDATE, {"id": vid(a), "q": 7}, token)
    assert await ws.expect_next(op) == {
        "variantStockChanged": {"id": vid(a), "quantityAvailable": 7}
    }
    # A second change of the same variant is read again, never served from a cache.
    await post(http, STOCK_UPDATE, {"id": vid(a), "q": 9}, token)
    assert (await ws.expect_next(op))["variantStockChanged"]["quantityAvailable"] == 9
    # A variant nobody asked for is filtered out: the next message is about `b`.
    await post(http, STOCK_UPDATE, {"id": vid(c), "q": 3}, token)
    await post(http, STOCK_UPDATE, {"id": vid(b), "q": 11}, token)
    assert (await ws.expect_next(op))["variantStockChanged"] == {
        "id": vid(b),
        "quantityAvailable": 11,
    }

    await ws.send({"id": op, "type": "complete"})
    await wait_gauge(http, 0)
    await post(http, STOCK_UPDATE, {"id": vid(a), "q": 1}, token)
    with pytest.raises(TimeoutError):
        await ws.recv(within=0.3)
    await ws.conn.close()


async def test_unpublished_variants_reach_staff_only(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    hidden, shown = await variants(db, 2)
    await set_product_of(db, hidden, is_published=False)
    products_token = await staff(db, "MANAGE_PRODUCTS")
    anonymous = await acked(server)
    customer_ws = await acked(server, token=(await customer(db))[1])
    staff_ws = await acked(server, token=products_token)
    ids = {"ids": [vid(hidden), vid(shown)]}
    ops = [await ws.subscribe(STOCK, ids) for ws in (anonymous, customer_ws, staff_ws)]
    await wait_gauge(http, 3)

    await post(http, STOCK_UPDATE, {"id": vid(hidden), "q": 4}, products_token)
    await post(http, STOCK_UPDATE, {"id": vid(shown), "q": 5}, products_token)
    staff_seen = [(await staff_ws.expect_next(ops[2]))["variantStockChanged"] for _ in range(2)]
    assert staff_seen == [
        {"id": vid(hidden), "quantityAvailable": 4},
        {"id": vid(shown), "quantityAvailable": 5},
    ]
    for ws, op in zip((anonymous, customer_ws), ops, strict=False):
        assert (await ws.expect_next(op))["variantStockChanged"]["id"] == vid(shown)
    for ws in (anonymous, customer_ws, staff_ws):
        await ws.conn.close()


async def test_events_others_filter_out_cost_them_no_queries(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    """Subscribers load only for events about their variants: one loader batch each for
    the event they asked for, none for the event before it."""
    watched, other = await variants(db, 2)
    token = await staff(db, "MANAGE_PRODUCTS")
    clients = [await acked(server) for _ in range(8)]
    ops = [await ws.subscribe(STOCK, {"ids": [vid(watched)]}) for ws in clients]
    await wait_gauge(http, 8)
    before = await loader_batches(http)
    await post(http, STOCK_UPDATE, {"id": vid(other), "q": 2}, token)
    await post(http, STOCK_UPDATE, {"id": vid(watched), "q": 6}, token)
    for ws, op in zip(clients, ops, strict=True):
        assert (await ws.expect_next(op))["variantStockChanged"]["quantityAvailable"] == 6
    assert await loader_batches(http) - before == len(clients)
    for ws in clients:
        await ws.conn.close()


async def loader_batches(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "shopql_dataloader_batch_size":
            total += sum(s.value for s in family.samples if s.name.endswith("_count"))
    return total


# --------------------------------------------------------------------------- orders


async def test_order_updates_reach_the_owner_and_order_managers_once_per_change(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    (variant,) = await variants(db, 1)
    owner_email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    await add_user(db, owner_email)
    owner = await sign_in(http, owner_email)
    manager = await staff(db, "MANAGE_ORDERS")
    orders_ws = await acked(server, token=manager)
    created_op = await orders_ws.subscribe(CREATED)
    await wait_gauge(http, 1)

    order = await place_order(caller(http, owner["accessToken"]), [(variant, 1)])
    created = (await orders_ws.expect_next(created_op))["orderCreated"]
    assert created["id"] == order["id"] and created["email"] == order["email"]

    owner_ws = await acked(server, token=owner["accessToken"])
    owner_op = await owner_ws.subscribe(ORDER, {"id": order["id"]})
    staff_op = await orders_ws.subscribe(ORDER, {"id": order["id"]})
    await wait_gauge(http, 3)

    # A refund changes the payment and the order in one transaction: one message.
    await post(http, REFUND, {"id": order["id"]}, manager)
    await post(http, CANCEL, {"id": order["id"]}, manager)
    for ws, op in ((owner_ws, owner_op), (orders_ws, staff_op)):
        refunded = (await ws.expect_next(op))["orderUpdated"]
        assert refunded["paymentStatus"] == "REFUNDED"
        assert refunded["payments"] == [{"status": "REFUNDED"}]
        assert refunded["status"] == "UNFULFILLED"
        canceled = (await ws.expect_next(op))["orderUpdated"]
        assert canceled["status"] == "CANCELED"
    await owner_ws.conn.close()
    await orders_ws.conn.close()


async def test_order_updated_refuses_strangers_without_revealing_the_order(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    owner, _ = await customer(db)
    order_id = await insert_order(db, user_id=owner, email="o@example.com", lines=[])
    _, stranger_token = await customer(db)
    stranger = await acked(server, token=stranger_token)
    theirs = await stranger.expect_error(
        await stranger.subscribe(ORDER, {"id": gid("Order", order_id)})
    )
    missing = await stranger.expect_error(
        await stranger.subscribe(ORDER, {"id": gid("Order", 2_000_000_000)})
    )
    strip = [{k: e[k] for k in ("message", "extensions")} for e in theirs]
    assert strip == [{k: e[k] for k in ("message", "extensions")} for e in missing]
    assert strip[0]["extensions"] == {"code": "FORBIDDEN"}

    anonymous = await acked(server)
    errors = await anonymous.expect_error(
        await anonymous.subscribe(ORDER, {"id": gid("Order", order_id)})
    )
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    for ws, code in ((anonymous, "UNAUTHENTICATED"), (stranger, "FORBIDDEN")):
        assert (await ws.expect_error(await ws.subscribe(CREATED)))[0]["extensions"]["code"] == code
    products_only = await acked(server, token=await staff(db, "MANAGE_PRODUCTS"))
    errors = await products_only.expect_error(await products_only.subscribe(CREATED))
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    for ws in (anonymous, stranger, products_only):
        await ws.conn.close()


async def test_revoked_session_stops_private_events(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    email = f"r-{uuid.uuid4().hex[:8]}@example.com"
    owner = await add_user(db, email)
    tokens = await sign_in(http, email, PASSWORD)
    order_id = await insert_order(db, user_id=owner, email=email, lines=[])
    manager = await staff(db, "MANAGE_ORDERS", "MANAGE_PRODUCTS")
    (variant,) = await variants(db, 1)
    ws = await acked(server, token=tokens["accessToken"])
    op = await ws.subscribe(ORDER, {"id": gid("Order", order_id)})
    stock_op = await ws.subscribe(STOCK, {"ids": [vid(variant)]})
    await wait_gauge(http, 2)

    await post(http, TOKEN_REVOKE, {"t": tokens["refreshToken"]}, tokens["accessToken"])
    await post(http, CANCEL, {"id": gid("Order", order_id)}, manager)
    message = await ws.recv()
    assert message["type"] == "next" and message["id"] == op
    assert message["payload"]["data"] is None
    assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["UNAUTHENTICATED"]
    assert await ws.recv() == {"id": op, "type": "complete"}
    # Public subscriptions on the connection go on (as anonymous).
    await post(http, STOCK_UPDATE, {"id": vid(variant), "q": 8}, manager)
    assert (await ws.expect_next(stock_op))["variantStockChanged"]["quantityAvailable"] == 8
    errors = await ws.expect_error(await ws.subscribe(CREATED))
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    await ws.conn.close()


async def test_expired_token_stops_private_events(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    owner, _ = await customer(db)
    order_id = await insert_order(db, user_id=owner, email="e@example.com", lines=[])
    manager = await staff(db, "MANAGE_ORDERS")
    short = await mint_token(db, owner, ttl=2)
    expires = time.time() + 2
    ws = await acked(server, token=short)
    op = await ws.subscribe(ORDER, {"id": gid("Order", order_id)})
    await wait_gauge(http, 1)
    await asyncio.sleep(max(0.0, expires - time.time()) + 1.05)  # JWT `exp` has 1 s steps

    await post(http, CANCEL, {"id": gid("Order", order_id)}, manager)
    message = await ws.recv()
    assert message["payload"]["data"] is None
    assert message["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await ws.recv() == {"id": op, "type": "complete"}
    await ws.conn.close()
    # The same token no longer opens a connection.
    assert await (await connect(server, token=short)).closed_with() == 4403


# --------------------------------------------------------------------------- connection


@pytest.mark.parametrize(
    "payload",
    [
        {"authorization": "Bearer not-a-jwt"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer "},
        {"authorization": 12345},
        {"authorization": ["Bearer x"]},
        {"authorization": "Bearer " + "A" * 5000},
        {"authorization": "Bearer \x00'; DROP TABLE users; --"},
    ],
)
async def test_bad_credentials_close_with_4403(server: LiveServer, payload: Any) -> None:
    ws = await connect(server, payload=payload)
    assert await ws.closed_with() == 4403


async def test_revoked_token_and_foreign_signature_close_with_4403(
    server: LiveServer, db: Database
) -> None:
    user, token = await customer(db)
    async with db.transaction() as conn:
        await conn.execute(
            auth_sessions.update()
            .where(auth_sessions.c.user_id == user)
            .values(revoked_at=sa.func.now())
        )
    assert await (await connect(server, token=token)).closed_with() == 4403
    head, body, _ = (await customer(db))[1].split(".")
    forged = f"{head}.{body}.{'A' * 43}"
    assert await (await connect(server, token=forged)).closed_with() == 4403
    # `Authorization` spelled with a capital, as some clients send it, is the same.
    _, good = await customer(db)
    ws = await acked(server, payload={"Authorization": f"Bearer {good}"})
    await ws.conn.close()


async def test_origins_outside_the_allowed_list_are_refused(server: LiveServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(server, origin="https://evil.example", init=False)
    assert refused.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus):
        await connect(server, origin="null", init=False)
    for origin in (ALLOWED_ORIGIN, None):
        ws = await acked(server, origin=origin)
        await ws.conn.close()


async def test_legacy_graphql_ws_protocol_is_refused(server: LiveServer) -> None:
    ws = await connect(server, protocols=("graphql-ws",), init=False)
    assert ws.conn.subprotocol is None
    assert await ws.closed_with() == 4406


async def test_subscription_cap_per_connection(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    (variant,) = await variants(db, 1)
    ws = await acked(server)
    ops = [await ws.subscribe(STOCK, {"ids": [vid(variant)]}) for _ in range(CAP)]
    await wait_gauge(http, CAP)
    refused = await ws.subscribe(STOCK, {"ids": [vid(variant)]})
    errors = await ws.expect_error(refused)
    assert errors[0]["extensions"] == {"code": "TOO_MANY_SUBSCRIPTIONS"}
    assert "SHOPQL_WS_MAX_SUBSCRIPTIONS" in errors[0]["message"]
    # The others keep running; completing one makes room for another.
    await ws.send({"id": ops[0], "type": "complete"})
    await wait_gauge(http, CAP - 1)
    again = await ws.subscribe(STOCK, {"ids": [vid(variant)]})
    await wait_gauge(http, CAP)
    await post(
        http, STOCK_UPDATE, {"id": vid(variant), "q": 12}, await staff(db, "MANAGE_PRODUCTS")
    )
    received = {(await ws.recv())["id"] for _ in range(CAP)}
    assert received == {*ops[1:], again}
    # Dropping the connection ends all of them (the fixture waits for the gauge at 0).
    await ws.conn.close()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "JSON"),
        (b"\x00\x01binary", "text"),
        ("[1, 2]", "object"),
        ('"connection_init"', "object"),
        ({"type": 5}, "type"),
        ({"type": "no_such_type"}, "Unknown message type"),
        ({"id": 7, "type": "subscribe", "payload": {"query": "{ __typename }"}}, "id"),
        ({"id": "x" * 129, "type": "subscribe", "payload": {"query": "{ __typename }"}}, "id"),
        (
            {"id": "1", "type": "subscribe", "payload": "subscription { orderCreated { id } }"},
            "payload",
        ),
        ({"id": "1", "type": "subscribe", "payload": {"query": 5}}, "query"),
        (
            {"id": "1", "type": "subscribe", "payload": {"query": "{ a }", "variables": [1]}},
            "variables",
        ),
        (
            {"id": "1", "type": "subscribe", "payload": {"query": "{ a }", "operationName": 1}},
            "operationName",
        ),
        ({"id": ["1"], "type": "complete"}, "id"),
        ({"id": "1", "type": "subscribe", "payload": {"query": "subscription {"}}, "Syntax Error"),
    ],
)
async def test_malformed_messages_close_with_4400(
    server: LiveServer, message: Any, reason: str
) -> None:
    ws = await acked(server)
    await ws.send(message)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert reason in closed.value.rcvd.reason


async def test_protocol_order_violations(server: LiveServer) -> None:
    early = await connect(server, init=False)
    await early.subscribe(CREATED)
    assert await early.closed_with() == 4401
    twice = await acked(server)
    await twice.send({"type": "connection_init"})
    assert await twice.closed_with() == 4429
    bad_init = await connect(server, payload=["not", "an", "object"])
    assert await bad_init.closed_with() == 4400
    duplicate = await acked(server)
    await duplicate.send(
        {
            "id": "same",
            "type": "subscribe",
            "payload": {"query": STOCK, "variables": {"ids": [vid(1)]}},
        }
    )
    await duplicate.send(
        {
            "id": "same",
            "type": "subscribe",
            "payload": {"query": STOCK, "variables": {"ids": [vid(1)]}},
        }
    )
    assert await duplicate.closed_with() == 4409


@pytest.mark.parametrize(
    ("ids", "code"),
    [
        ([], "BAD_USER_INPUT"),
        (["not-an-id"], "BAD_USER_INPUT"),
        ([gid("Product", 1)], "BAD_USER_INPUT"),
        ([vid(1)] * 101, "BAD_USER_INPUT"),
        (["' OR 1=1 --"], "BAD_USER_INPUT"),
        (["\x00\u202e<script>"], "BAD_USER_INPUT"),
        (["A" * 10_000], "BAD_USER_INPUT"),
        ([{"id": 1}], "BAD_USER_INPUT"),
        ([None], "BAD_USER_INPUT"),
        (None, "BAD_USER_INPUT"),
        ({"ids": 1}, "BAD_USER_INPUT"),
    ],
)
async def test_bad_variant_ids_get_an_error_and_keep_the_connection(
    server: LiveServer, http: httpx.AsyncClient, ids: Any, code: str
) -> None:
    ws = await acked(server)
    errors = await ws.expect_error(await ws.subscribe(STOCK, {"ids": ids}))
    assert [e["extensions"]["code"] for e in errors][:1] == [code], errors
    assert all("Traceback" not in e["message"] for e in errors)
    # The connection still serves a good subscription; unknown IDs are accepted (they
    # never fire, and do not reveal which IDs exist).
    op = await ws.subscribe(STOCK, {"ids": [vid(2_000_000_000), vid(1)]})
    await wait_gauge(http, 1)
    await ws.send({"id": op, "type": "complete"})
    await ws.conn.close()


async def test_queries_run_over_the_socket_and_subscriptions_not_over_http(
    server: LiveServer, http: httpx.AsyncClient, db: Database
) -> None:
    _, token = await customer(db)
    ws = await acked(server, token=token)
    op = await ws.subscribe("{ me { email } }")
    assert (await ws.expect_next(op))["me"]["email"].startswith("c-")
    assert await ws.recv() == {"id": op, "type": "complete"}
    await ws.conn.close()
    for response in (
        await http.post("/graphql", json={"query": CREATED}),
        await http.get("/graphql", params={"query": CREATED}),
    ):
        (error,) = response.json()["errors"]
        assert "WebSocket" in error["message"], error
        assert error["extensions"]["code"] in {"GRAPHQL_VALIDATION_FAILED", "BAD_REQUEST"}


def caller(http: httpx.AsyncClient, token: str) -> Any:
    """A checkout_flow-style caller for the live server."""

    async def call(query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {token}"},
        )
        body = response.json()
        if not kw.get("errors", False):
            assert "errors" not in body, body
        return body

    return call
