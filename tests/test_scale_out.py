"""Scale-out for real: two `shopql serve` processes sharing one database and one Redis,
as two hosts behind a load balancer with no sticky sessions.

- A subscriber connected to process A hears, within a second, of an order changed (and
  of an order created) through process B: events cross processes through Redis pub/sub.
- Buyers spread over both processes racing for the last units never oversell.
- A sign-in lockout earned on one process holds on the other.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from accounts_factory import TOKEN_CREATE, add_user, mint_token, payload_errors, sign_in
from checkout_flow import caller, place_order
from conftest import DatabaseFactory
from crash_worker import (
    complete,
    make_checkout,
    pick_variants,
    set_stock,
    standard_method,
    stock_of,
)
from live_server import LiveServer, live_server
from test_subscriptions import wait_gauge
from ws_client import acked

from models.db import Database

ORDER = """subscription($id: ID!) { orderUpdated(orderId: $id) { id status } }"""
CREATED = "subscription { orderCreated { id email } }"
CANCEL = "mutation($id: ID!) { orderCancel(id: $id) { errors { code message } } }"


@pytest.fixture(scope="module")
def pair(
    databases: DatabaseFactory, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Processes A and B on one database copy and one Redis namespace."""
    url = databases.copy()
    env = {
        "REDIS_URL": redis_url,
        "SHOPQL_REDIS_PREFIX": f"shopqltest-{uuid.uuid4().hex[:12]}",
        "SHOPQL_METRICS": "1",
        "SHOPQL_WEBHOOK_WORKER": "0",
    }
    logs: Path = tmp_path_factory.mktemp("scale-out")
    try:
        with (
            live_server(url, logs / "a", env=env) as a,
            live_server(url, logs / "b", env=env) as b,
        ):
            yield a, b
        for server in (a, b):
            text = server.log_text()
            assert "Traceback" not in text, text[-4000:]
            assert "database is locked" not in text, text[-4000:]
    finally:
        databases.drop(url)


@pytest.fixture
async def clients(
    pair: tuple[LiveServer, LiveServer],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b,
    ):
        yield on_a, on_b
        await wait_gauge(on_a, 0)


@pytest.fixture
async def db(pair: tuple[LiveServer, LiveServer]) -> AsyncIterator[Database]:
    database = Database(pair[0].database_url)
    yield database
    await database.dispose()


async def test_a_subscriber_on_one_process_hears_changes_made_through_another(
    pair: tuple[LiveServer, LiveServer],
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    db: Database,
) -> None:
    a, _ = pair
    on_a, on_b = clients
    (variant,) = await pick_variants(db, 1, skip=3)
    await set_stock(db, {variant: 5})
    email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    await add_user(db, email)
    owner = await sign_in(on_b, email)
    manager_id = await add_user(
        db, f"m-{uuid.uuid4().hex[:8]}@example.com", is_staff=True, permissions=["MANAGE_ORDERS"]
    )
    manager = await mint_token(db, manager_id)

    watcher = await acked(a, token=manager)
    created_op = await watcher.subscribe(CREATED)
    await wait_gauge(on_a, 1)
    order = await place_order(caller(on_b, owner["accessToken"]), [(variant, 1)])  # on B
    created = (await watcher.expect_next(created_op))["orderCreated"]
    assert created == {"id": order["id"], "email": order["email"]}

    owner_ws = await acked(a, token=owner["accessToken"])
    op = await owner_ws.subscribe(ORDER, {"id": order["id"]})
    await wait_gauge(on_a, 2)
    started = time.monotonic()
    body = (
        await on_b.post(
            "/graphql",
            json={"query": CANCEL, "variables": {"id": order["id"]}},
            headers={"authorization": f"Bearer {manager}"},
        )
    ).json()
    assert body["data"]["orderCancel"]["errors"] == [], body
    update = (await owner_ws.expect_next(op))["orderUpdated"]
    elapsed = time.monotonic() - started
    assert update == {"id": order["id"], "status": "CANCELED"}
    assert elapsed < 1.0, f"the event took {elapsed:.3f} s to cross processes"
    await owner_ws.conn.close()
    await watcher.conn.close()


async def test_buyers_spread_over_both_processes_never_oversell(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], db: Database
) -> None:
    on_a, on_b = clients
    (variant,) = await pick_variants(db, 1, skip=11)
    await set_stock(db, {variant: 5})
    method = await standard_method(on_a)
    buyers = 16
    checkouts = await asyncio.gather(
        *(
            make_checkout((on_a, on_b)[i % 2], {variant: 1}, method, f"b{i}@example.com")
            for i in range(buyers)
        )
    )
    results = await asyncio.gather(
        *(
            complete((on_b, on_a)[i % 2], gid, f"key-{uuid.uuid4().hex}")
            for i, gid in enumerate(checkouts)
        )
    )
    assert all(r["_status"] == 200 and "errors" not in r for r in results), results[:3]
    payloads = [r["data"]["checkoutComplete"] for r in results]
    assert sum(1 for p in payloads if p["order"]) == 5
    assert Counter(e["code"] for p in payloads for e in p["errors"]) == {
        "INSUFFICIENT_STOCK": buyers - 5
    }
    assert await stock_of(db, [variant]) == {variant: 0}
    assert len({p["order"]["id"] for p in payloads if p["order"]}) == 5


async def test_a_sign_in_lockout_on_one_process_holds_on_the_other(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], db: Database
) -> None:
    on_a, on_b = clients
    email = f"locked-{uuid.uuid4().hex[:8]}@example.com"
    await add_user(db, email)
    for i in range(10):
        body = (
            await (on_a, on_b)[i % 2].post(
                "/graphql",
                json={"query": TOKEN_CREATE, "variables": {"email": email, "password": "wrong"}},
            )
        ).json()
        assert payload_errors(body, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
    for client in (on_a, on_b):
        body = (
            await client.post(
                "/graphql",
                json={
                    "query": TOKEN_CREATE,
                    "variables": {"email": email, "password": "correct horse battery"},
                },
            )
        ).json()
        assert payload_errors(body, "tokenCreate") == [(None, "RATE_LIMITED")]
