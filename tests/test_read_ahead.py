"""`me { orders }` is read while the request's session is looked up (schema.speculation):
keyed by the token's user id, used only once the lookup has made that user the viewer.
The answers, errors included, are exactly those of the resolver's own read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import checkout_flow as f
import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import mint_token
from conftest import TEST_DATABASE_URL, make_client

from models.accounts import queries as accounts_q
from models.accounts.tables import auth_sessions, users
from models.db import Database
from schema import http, speculation

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="orders are read ahead on PostgreSQL only"
)

ORDER = """number status total { amount currency }
  lines { id productName sku quantity unitPrice { amount } }"""

MY_ORDERS = f"""query($n: Int, $after: String, $before: String, $last: Int) {{ me {{ email
  orders(first: $n, after: $after, last: $last, before: $before) {{ totalCount
    edges {{ cursor node {{ {ORDER} }} }}
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }} }}"""

# Read ahead: one `me`, one `orders` under it, arguments that make a window.
PLANNED: list[tuple[str, dict[str, Any]]] = [
    (MY_ORDERS, {"n": 20}),
    (MY_ORDERS, {"n": 3}),
    (MY_ORDERS, {}),  # the default page size
    (MY_ORDERS, {"n": 0}),
    (MY_ORDERS, {"last": 4}),
    ("{ me { orders(first: 5) { nodes { number } } } }", {}),  # no lines: none embedded
    (
        "query Mine { ...Q } fragment Q on Query { me { ...U } }"
        " fragment U on User { orders(first: 2) { edges { node { number lines { sku } } } } }",
        {},
    ),
    (
        "query A { products(first: 1) { nodes { slug } } }"
        " query B { me { orders(first: 2) { nodes { number } } } }",
        {"operationName": "B"},
    ),
    (
        "{ me { orders(first: 1) { nodes { number } } } x: me { email } }",  # one orders key
        {},
    ),
]

# Left to the resolver: the answer is its own, errors at their paths.
NOT_PLANNED: list[tuple[str, dict[str, Any]]] = [
    (
        "{ me { a: orders(first: 1) { nodes { number } } b: orders(first: 2) { nodes { number } } } }",
        {},
    ),
    (
        "{ a: me { orders(first: 1) { nodes { number } } } b: me { orders { nodes { number } } } }",
        {},
    ),
    (MY_ORDERS, {"n": 101}),
    (MY_ORDERS, {"n": -1}),
    (MY_ORDERS, {"n": 2, "last": 2}),
    (MY_ORDERS, {"n": 2, "after": "not-a-cursor"}),
    (MY_ORDERS, {"n": 2, "after": "x" * 5000}),
    (MY_ORDERS, {"n": 2, "before": "'; DROP TABLE orders; --"}),
    (MY_ORDERS, {"n": 2, "after": "\u202e\U0001f4a5 ünïcode"}),
    (MY_ORDERS, {"n": "twenty"}),  # a wrong type: refused before anything runs
    (MY_ORDERS, {"n": [1, 2]}),
    ('{ me { orders(first: "2") { nodes { number } } } }', {}),  # invalid document
    ("{ me { email } }", {}),  # no orders asked
    ("{ me { orders(first: 2) @skip(if: true) { nodes { number } } email } }", {}),
    ("{ me @include(if: false) { orders(first: 2) { nodes { number } } } }", {}),
    ("{ products(first: 1) { nodes { slug } } }", {}),
    (
        'mutation { tokenRevoke(refreshToken: "nope") { errors { code } } }',
        {},
    ),
]


@dataclass
class Shop:
    client: httpx.AsyncClient
    token: str
    other_token: str
    user_id: int
    other_id: int


@pytest.fixture
async def shop(fresh_db: Database) -> AsyncIterator[Shop]:
    stocked = await f.stock_variants(fresh_db, 4)
    customer = await f.add_customer(fresh_db, "ahead@example.com")
    other = await f.add_customer(fresh_db, "other@example.com")
    for i in range(9):
        await f.insert_order(
            fresh_db,
            user_id=customer,
            email="ahead@example.com",
            lines=[(stocked[i % 4], 1 + i), (stocked[(i + 1) % 4], 2)] if i % 3 else [],
        )
    await f.insert_order(
        fresh_db, user_id=other, email="other@example.com", lines=[(stocked[0], 7)]
    )
    async with make_client(fresh_db) as client:
        yield Shop(
            client,
            await mint_token(fresh_db, customer),
            await mint_token(fresh_db, other),
            customer,
            other,
        )


async def _post(
    client: httpx.AsyncClient, token: str | None, query: str, variables: dict[str, Any]
) -> Any:
    variables = dict(variables)
    payload: dict[str, Any] = {"query": query}
    if "operationName" in variables:
        payload["operationName"] = variables.pop("operationName")
    payload["variables"] = variables
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await client.post("/graphql", json=payload, headers=headers)
    body = response.json()
    body["status"] = response.status_code
    return body


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The user ids orders were read ahead for, as they are read."""
    reads: list[int] = []
    original = speculation._read

    async def counted(db: Database, user_id: int, *args: Any) -> Any:
        reads.append(user_id)
        return await original(db, user_id, *args)

    monkeypatch.setattr(speculation, "_read", counted)
    return reads


async def _cursor(shop: Shop) -> str:
    body = await _post(shop.client, shop.token, MY_ORDERS, {"n": 2})
    return str(body["data"]["me"]["orders"]["pageInfo"]["endCursor"])


async def test_read_ahead_answers_what_the_resolver_answers(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = await _cursor(shop)
    planned = [
        *PLANNED,
        (MY_ORDERS, {"n": 3, "after": cursor}),
        (MY_ORDERS, {"last": 2, "before": cursor}),
    ]
    cases = [*planned, *NOT_PLANNED]
    reads = _count_reads(monkeypatch)
    ahead: dict[tuple[str, int], Any] = {}
    for who, token in (("customer", shop.token), ("other", shop.other_token)):
        for i, (query, variables) in enumerate(cases):
            await _post(shop.client, token, query, variables)  # the document enters the cache
            before = len(reads)
            ahead[who, i] = await _post(shop.client, token, query, variables)
            expected = 1 if i < len(planned) else 0
            assert len(reads) - before == expected, (who, query, variables)
    assert set(reads) == {shop.user_id, shop.other_id}

    with monkeypatch.context() as patched:
        patched.setattr(http, "read_ahead", lambda *args: None)
        for who, token in (("customer", shop.token), ("other", shop.other_token)):
            for i, (query, variables) in enumerate(cases):
                resolved = await _post(shop.client, token, query, variables)
                assert {k: v for k, v in ahead[who, i].items() if k != "extensions"} == {
                    k: v for k, v in resolved.items() if k != "extensions"
                }, (who, query, variables)
                if "extensions" in resolved:  # the read replaces the loader's, adds none
                    assert (
                        ahead[who, i]["extensions"]["sql"]["count"]
                        == resolved["extensions"]["sql"]["count"]
                    ), (who, query, variables)

    # The cases say what they mean to: pages found, each customer's own, errors where they are
    mine = ahead["customer", 0]["data"]["me"]["orders"]
    assert mine["totalCount"] == 9 and len(mine["edges"]) == 9
    assert [len(e["node"]["lines"]) for e in mine["edges"]].count(0) == 3
    theirs = ahead["other", 0]["data"]["me"]["orders"]
    assert [e["node"]["lines"][0]["quantity"] for e in theirs["edges"]] == [7]
    assert len(ahead["customer", 1]["data"]["me"]["orders"]["edges"]) == 3
    assert ahead["customer", 3]["data"]["me"]["orders"]["edges"] == []
    after = ahead["customer", len(planned) - 2]["data"]["me"]["orders"]
    assert after["pageInfo"]["hasPreviousPage"] and len(after["edges"]) == 3
    bad = {i: ahead["customer", len(planned) + i] for i in range(2, 12)}
    for i in range(2, 9):
        assert [e["path"] for e in bad[i]["errors"]] == [["me", "orders"]], bad[i]
        assert bad[i]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    codes = [[e["extensions"]["code"] for e in bad[i]["errors"]] for i in (9, 10, 11)]
    assert codes == [["BAD_USER_INPUT"], ["BAD_USER_INPUT"], ["GRAPHQL_VALIDATION_FAILED"]]
    assert all(bad[i]["data"] is None for i in (9, 10, 11))


async def test_orders_are_read_while_the_session_is_looked_up(
    shop: Shop, fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session lookup is held until the orders have been read: it answers only if
    the orders' statement did not wait for it. With rate limiting on too (the limiter
    waits for the viewer, whose bucket it charges)."""
    lookup, read = accounts_q.viewer_for_session, speculation._read
    orders_read = asyncio.Event()

    async def held_lookup(conn: Any, **kw: Any) -> Any:
        await asyncio.wait_for(orders_read.wait(), timeout=10)
        return await lookup(conn, **kw)

    async def signalling_read(*args: Any) -> Any:
        rows = await read(*args)
        orders_read.set()
        return rows

    async with make_client(fresh_db, rate_limit=30_000) as limited:
        for client in (shop.client, limited):
            await _post(client, shop.token, MY_ORDERS, {"n": 5})  # cached
            orders_read.clear()
            with monkeypatch.context() as patched:
                patched.setattr(accounts_q, "viewer_for_session", held_lookup)
                patched.setattr(speculation, "_read", signalling_read)
                body = await _post(client, shop.token, MY_ORDERS, {"n": 5})
            assert "errors" not in body, body
            assert len(body["data"]["me"]["orders"]["edges"]) == 5
            # the session, the orders, their count: the orders' read replaced the loader's
            assert body["extensions"]["sql"]["count"] == 3


async def test_orders_read_ahead_for_a_revoked_or_inactive_session_are_not_served(
    shop: Shop, fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _count_reads(monkeypatch)
    await _post(shop.client, shop.token, MY_ORDERS, {"n": 5})
    async with fresh_db.transaction() as conn:
        await conn.execute(
            sa.update(users).where(users.c.id == shop.user_id).values(is_active=False)
        )
    body = await _post(shop.client, shop.token, MY_ORDERS, {"n": 5})
    assert body["data"] is None or body["data"]["me"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert reads[-1] == shop.user_id  # read, and dropped

    async with fresh_db.transaction() as conn:
        await conn.execute(
            sa.update(users).where(users.c.id == shop.user_id).values(is_active=True)
        )
    token = await mint_token(fresh_db, shop.user_id)
    body = await _post(shop.client, token, MY_ORDERS, {"n": 5})
    assert len(body["data"]["me"]["orders"]["edges"]) == 5
    session_id = (await _session_ids(fresh_db, shop.user_id))[-1]
    async with fresh_db.transaction() as conn:
        await accounts_q.revoke_session(conn, session_id=session_id)
    before = len(reads)
    body = await _post(shop.client, token, MY_ORDERS, {"n": 5})
    assert len(reads) == before + 1
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert "orders" not in str(body["data"])


async def _session_ids(db: Database, user_id: int) -> list[str]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(auth_sessions.c.id)
            .where(auth_sessions.c.user_id == user_id)
            .order_by(auth_sessions.c.created_at)
        )
        return [str(row[0]) for row in rows]


async def test_a_failed_read_ahead_is_read_again_by_the_resolver(
    shop: Shop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = await _post(shop.client, shop.token, MY_ORDERS, {"n": 4})
    original = speculation.q.orders_by_users
    failed: list[bool] = []

    async def fails_once(*args: Any, **kw: Any) -> Any:
        if not failed:
            failed.append(True)
            raise ConnectionResetError("the connection dropped")
        return await original(*args, **kw)

    monkeypatch.setattr(speculation.q, "orders_by_users", fails_once)
    with caplog.at_level(logging.WARNING, logger="shopql.graphql"):
        body = await _post(shop.client, shop.token, MY_ORDERS, {"n": 4})
    assert failed == [True]
    assert {k: v for k, v in body.items() if k != "extensions"} == {
        k: v for k, v in expected.items() if k != "extensions"
    }
    assert "reading the viewer's orders ahead failed" in caplog.text


async def test_no_read_ahead_without_a_valid_token(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _count_reads(monkeypatch)
    for token in (None, "not-a-token", shop.token[:-4] + "AAAA"):
        for _ in range(2):
            body = await _post(shop.client, token, MY_ORDERS, {"n": 2})
            assert body["data"] is None or body["data"]["me"] is None
    assert reads == []
