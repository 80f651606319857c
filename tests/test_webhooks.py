"""Outbound webhooks: the durable outbox, signed deliveries with retries, the staff API.

Deliveries go to a real HTTP receiver on 127.0.0.1 (tests/webhook_receiver.py), so the
app runs with SHOPQL_WEBHOOK_ALLOW_PRIVATE on, except where the SSRF guard is the point.
Backoff and polling are shortened, and the retry schedule runs on a fake clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from accounts_factory import add_user, call, gid, mint_token
from conftest import TEST_SECRET, AppClient, make_client
from webhook_receiver import Receiver, verify_signature

from models.db import Database, track_sql
from models.events import ORDER_CREATED, VARIANT_STOCK_CHANGED, record_event
from models.webhooks import queries as wq
from models.webhooks.outbox import global_id
from models.webhooks.signing import signature, verify
from models.webhooks.tables import webhook_attempts, webhook_deliveries, webhooks
from models.webhooks.worker import Backoff, WebhookWorker
from resolvers import ids

SECRET = "whsec_test_0123456789abcdef"
ERRORS = "errors { field code message }"
WEBHOOK_FIELDS = "id url events isActive secretSet createdAt"
DELIVERY_FIELDS = """id event status attempts lastStatusCode lastError createdAt deliveredAt
  nextAttemptAt payload attemptLog { attempt statusCode error durationMs }"""
CREATE = f"""mutation($input: WebhookCreateInput!) {{
  webhookCreate(input: $input) {{ webhook {{ {WEBHOOK_FIELDS} }} {ERRORS} }} }}"""
UPDATE = f"""mutation($id: ID!, $input: WebhookUpdateInput!) {{
  webhookUpdate(id: $id, input: $input) {{ webhook {{ {WEBHOOK_FIELDS} }} {ERRORS} }} }}"""
DELETE = f"mutation($id: ID!) {{ webhookDelete(id: $id) {{ deletedId {ERRORS} }} }}"
RETRY = f"""mutation($id: ID!) {{
  webhookDeliveryRetry(id: $id) {{ delivery {{ id status attempts }} {ERRORS} }} }}"""
DELIVERIES = f"""query($filter: WebhookDeliveryFilter, $first: Int) {{
  webhookDeliveries(filter: $filter, first: $first) {{ totalCount nodes {{ {DELIVERY_FIELDS} }} }} }}"""
STOCK = f"""mutation($id: ID!, $q: Int!) {{
  variantStockUpdate(id: $id, quantity: $q) {{ productVariant {{ id }} {ERRORS} }} }}"""
FAST = Backoff(base=0.05, cap=1.0, jitter=0)


async def staff_token(db: Database) -> str:
    user_id = await add_user(
        db,
        "hooks@example.com",
        is_staff=True,
        permissions=["MANAGE_STAFF", "MANAGE_PRODUCTS"],
    )
    return await mint_token(db, user_id)


async def variant_ids(client: AppClient, count: int = 2) -> list[str]:
    body = await call(client, "{ products(first: 5) { nodes { variants { id } } } }")
    found = [v["id"] for p in body["data"]["products"]["nodes"] for v in p["variants"]]
    return found[:count]


async def create_webhook(
    client: AppClient, token: str, url: str, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    variables = {
        "input": {"url": url, "events": events or ["VARIANT_STOCK_CHANGED"], "secret": SECRET}
        | extra
    }
    body = await call(client, CREATE, variables, token=token)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["webhookCreate"]
    assert payload["errors"] == [], payload
    return payload["webhook"]


async def deliveries(client: AppClient, token: str, **filter: Any) -> list[dict[str, Any]]:
    body = await call(client, DELIVERIES, {"filter": filter or None, "first": 100}, token=token)
    assert "errors" not in body, body
    nodes: list[dict[str, Any]] = body["data"]["webhookDeliveries"]["nodes"]
    return nodes


async def set_stock(client: AppClient, token: str, variant: str, quantity: int) -> None:
    body = await call(client, STOCK, {"id": variant, "q": quantity}, token=token)
    assert "errors" not in body and body["data"]["variantStockUpdate"]["errors"] == [], body


async def count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


# ------------------------------------------------------------------ delivery


async def test_failing_receiver_gets_each_event_exactly_once_signed(fresh_db: Database) -> None:
    async with (
        Receiver(SECRET, fail_first=3) as receiver,
        make_client(fresh_db, webhook_allow_private=True) as client,
    ):
        token = await staff_token(fresh_db)
        hook = await create_webhook(client, token, receiver.url)
        assert hook["secretSet"] is True and hook["events"] == ["VARIANT_STOCK_CHANGED"]
        worker = WebhookWorker(fresh_db, allow_private=True, poll_interval=0.05, backoff=FAST)
        worker.start()
        try:
            first, second = await variant_ids(client)
            await set_stock(client, token, first, 7)
            await set_stock(client, token, second, 9)
            await receiver.wait_for(lambda r: len(r.accepted) >= 2)
            await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
        finally:
            await worker.stop()
        accepted = receiver.accepted
        assert len(accepted) == 2
        assert len({r.delivery for r in accepted}) == 2
        assert len(receiver.requests) == 8  # 3 failures + 1 success per event
        assert all(r.signature_ok for r in receiver.requests)
        data = sorted(r.json["data"]["variantIds"][0] for r in accepted)
        assert data == sorted([first, second])
        for r in accepted:
            assert r.headers["shopql-event"] == "VARIANT_STOCK_CHANGED"
            assert r.headers["content-type"] == "application/json"
            assert r.json["id"] == r.delivery and r.json["event"] == "VARIANT_STOCK_CHANGED"
            assert verify(
                SECRET, r.headers["shopql-timestamp"], r.body, r.headers["shopql-signature"]
            )
        # Every attempt of one delivery sent the same bytes.
        for r in accepted:
            assert {x.body for x in receiver.requests if x.delivery == r.delivery} == {r.body}
        found = await deliveries(client, token, webhookId=hook["id"])
        assert [d["status"] for d in found] == ["DELIVERED", "DELIVERED"]
        for d in found:
            assert d["attempts"] == 4 and d["lastStatusCode"] == 200 and d["lastError"] is None
            assert [a["statusCode"] for a in d["attemptLog"]] == [500, 500, 500, 200]
            assert [a["attempt"] for a in d["attemptLog"]] == [1, 2, 3, 4]
            assert d["attemptLog"][0]["error"] == "HTTP 500"
            assert d["nextAttemptAt"] is None and d["deliveredAt"] is not None
            sent = next(r for r in accepted if r.delivery == d["id"])
            assert d["payload"] == sent.body.decode()


async def test_signature_scheme_matches_the_documented_receiver() -> None:
    body = b'{"id":"x","event":"ORDER_CREATED","data":{}}'
    now = int(time.time())
    header = signature(SECRET, now, body)
    headers = {"shopql-timestamp": str(now), "shopql-signature": header}
    assert header.startswith("v1=") and len(header) == 3 + 64
    assert verify_signature(SECRET, headers, body)
    assert not verify_signature(SECRET, headers, body + b" ")
    assert not verify_signature("another-secret-0123456789", headers, body)
    assert not verify_signature(SECRET, headers, body, now=now + 301)  # stale: replayed


async def test_backoff_schedule_and_expiry_after_24_hours(fresh_db: Database) -> None:
    async with Receiver(SECRET, fail_first=10_000) as receiver:
        async with fresh_db.transaction() as conn:
            await wq.create_webhook(
                conn, url=receiver.url, secret=SECRET, events=["ORDER_CREATED"], is_active=True
            )
        async with fresh_db.transaction() as conn:
            record_event(conn, ORDER_CREATED, {"order_id": 1})
        clock = FakeClock()
        worker = WebhookWorker(fresh_db, allow_private=True, clock=clock, backoff=Backoff(jitter=0))
        expected = [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        try:
            for attempt, delay in enumerate(expected, start=1):
                assert await worker.run_once() == 1, attempt
                assert await worker.run_once() == 0  # not due again yet
                row = await delivery_row(fresh_db)
                assert row.attempts == attempt and row.status == "PENDING"
                assert row.next_attempt_at - clock.now == timedelta(seconds=delay)
                clock.now = row.next_attempt_at
            # ... hourly until 24 hours after creation; the last retry is at the deadline.
            while (row := await delivery_row(fresh_db)).status == "PENDING":
                clock.now = row.next_attempt_at
                assert await worker.run_once() == 1
                assert clock.now <= row.expires_at
        finally:
            await worker.stop()
        assert row.status == "FAILED" and clock.now == row.expires_at
        assert row.expires_at - row.created_at == timedelta(hours=24)
        assert row.attempts == len(receiver.requests) == await count(fresh_db, webhook_attempts)
        assert 30 < row.attempts < 40  # 11 climbing retries, then hourly for ~22 hours


async def delivery_row(db: Database) -> Any:
    async with db.read() as conn:
        return (await conn.execute(sa.select(webhook_deliveries))).one()


def test_jitter_stays_within_bounds() -> None:
    import random

    backoff = Backoff()
    rng = random.Random(1)
    delays = {backoff.delay(3, rng).total_seconds() for _ in range(50)}
    assert len(delays) > 40 and all(32 <= d <= 48 for d in delays)


async def test_retry_mutation_replays_a_delivered_delivery(fresh_db: Database) -> None:
    async with (
        Receiver(SECRET) as receiver,
        make_client(fresh_db, webhook_allow_private=True) as client,
    ):
        token = await staff_token(fresh_db)
        await create_webhook(client, token, receiver.url)
        [variant] = await variant_ids(client, 1)
        await set_stock(client, token, variant, 3)
        worker = WebhookWorker(fresh_db, allow_private=True, backoff=FAST)
        try:
            assert await worker.run_once() == 1
            [delivery] = await deliveries(client, token)
            assert delivery["status"] == "DELIVERED"
            body = await call(client, RETRY, {"id": delivery["id"]}, token=token)
            payload = body["data"]["webhookDeliveryRetry"]
            assert payload["errors"] == [] and payload["delivery"]["status"] == "PENDING"
            assert await worker.run_once() == 1
        finally:
            await worker.stop()
        assert [r.delivery for r in receiver.accepted] == [delivery["id"]] * 2
        assert receiver.accepted[0].body == receiver.accepted[1].body
        [again] = await deliveries(client, token, status="DELIVERED")
        assert again["attempts"] == 2 and len(again["attemptLog"]) == 2
        body = await call(client, RETRY, {"id": gid("WebhookDelivery", 999_999)}, token=token)
        assert body["data"]["webhookDeliveryRetry"]["errors"][0]["code"] == "NOT_FOUND"
        audit = await call(
            client,
            '{ auditLog(filter: {action: "webhookDeliveryRetry"}) { totalCount } }',
            token=token,
        )
        assert audit["data"]["auditLog"]["totalCount"] == 1


# ------------------------------------------------------------ outbox atomicity


async def test_rolled_back_transaction_queues_and_publishes_nothing(fresh_db: Database) -> None:
    async with fresh_db.transaction() as conn:
        await wq.create_webhook(
            conn, url="http://hooks.test/", secret=SECRET, events=["ORDER_CREATED"], is_active=True
        )
    heard: list[str] = []
    fresh_db.events.add_listener(lambda e: heard.append(e.name))
    with pytest.raises(RuntimeError):
        async with fresh_db.transaction() as conn:
            record_event(conn, ORDER_CREATED, {"order_id": 1})
            raise RuntimeError("boom")
    assert await count(fresh_db, webhook_deliveries) == 0
    assert heard == [] and fresh_db.events.published == 0
    async with fresh_db.transaction() as conn:
        record_event(conn, ORDER_CREATED, {"order_id": 2})
    assert await count(fresh_db, webhook_deliveries) == 1 and heard == [ORDER_CREATED]


async def test_fan_out_is_one_statement_per_transaction(fresh_db: Database) -> None:
    async with fresh_db.transaction() as conn:
        for n in range(3):
            await wq.create_webhook(
                conn,
                url=f"http://hooks{n}.test/",
                secret=SECRET,
                events=["ORDER_CREATED", "VARIANT_STOCK_CHANGED"],
                is_active=n != 2,  # inactive webhooks get nothing
            )

    async def statements(*events: tuple[str, dict[str, Any]]) -> int:
        stats = track_sql()
        async with fresh_db.transaction() as conn:
            await conn.execute(sa.select(1))
            for name, payload in events:
                record_event(conn, name, payload)
        return stats.count

    baseline = await statements()
    three = await statements(
        (ORDER_CREATED, {"order_id": 1}),
        (VARIANT_STOCK_CHANGED, {"variant_ids": [1, 2]}),
        ("not_a_webhook_event", {}),
    )
    assert three == baseline + 1
    assert await statements(("not_a_webhook_event", {})) == baseline
    assert await count(fresh_db, webhook_deliveries) == 4  # 2 events x 2 active webhooks
    async with fresh_db.read() as conn:
        rows = (await conn.execute(sa.select(webhook_deliveries).order_by("id"))).all()
    assert [r.event for r in rows] == ["ORDER_CREATED"] * 2 + ["VARIANT_STOCK_CHANGED"] * 2
    assert rows[0].payload == f'{{"orderId":"{ids.encode("Order", 1)}"}}'


def test_payload_ids_use_the_api_global_id_scheme() -> None:
    assert global_id("ProductVariant", 42) == ids.encode("ProductVariant", 42)
    assert ids.decode(global_id("WebhookDelivery", 7), "WebhookDelivery") == 7


# ---------------------------------------------------------------- SSRF guard

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8000/hook",
    "http://10.0.0.1/hook",
    "http://192.168.1.10/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "ftp://example.com/hook",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "https://user:pass@example.com/hook",
    "https://example.com@127.0.0.1/hook",
    "http:///nohost",
    "https://exa mple.com/",
    "https://example.com/\r\nX-Injected: 1",
    "https://example.com/" + "a" * 2048,
    "",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_unsafe_urls_are_refused(fresh_db: Database, url: str) -> None:
    async with make_client(fresh_db) as client:
        token = await staff_token(fresh_db)
        variables = {"input": {"url": url, "events": ["ORDER_CREATED"], "secret": SECRET}}
        body = await call(client, CREATE, variables, token=token)
        payload = body["data"]["webhookCreate"]
        assert payload["webhook"] is None
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [("input.url", "INVALID")]
        assert await count(fresh_db, webhooks) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"events": []}, "input.events"),
        ({"events": ["ORDER_CREATED", "ORDER_CREATED"]}, "input.events"),
        ({"secret": "short"}, "input.secret"),
        ({"secret": "x" * 257}, "input.secret"),
        ({"secret": "sixteen chars with spaces"}, "input.secret"),
        ({"secret": "\x00" * 20}, "input.secret"),
    ],
)
async def test_invalid_input_writes_nothing(
    fresh_db: Database, change: dict[str, Any], field: str
) -> None:
    async with make_client(fresh_db, webhook_allow_private=True) as client:
        token = await staff_token(fresh_db)
        variables = {
            "input": {"url": "http://127.0.0.1:9/", "events": ["ORDER_CREATED"], "secret": SECRET}
            | change
        }
        body = await call(client, CREATE, variables, token=token)
        errors = body["data"]["webhookCreate"]["errors"]
        assert [e["field"] for e in errors] == [field], errors
        assert await count(fresh_db, webhooks) == 0


async def test_worker_rechecks_the_address_at_delivery_time(fresh_db: Database) -> None:
    """A webhook saved while private addresses were allowed (or whose DNS changed since)
    is not sent to a loopback address by a worker that does not allow them."""
    async with Receiver(SECRET) as receiver:
        async with fresh_db.transaction() as conn:
            await wq.create_webhook(
                conn, url=receiver.url, secret=SECRET, events=["ORDER_CREATED"], is_active=True
            )
            record_event(conn, ORDER_CREATED, {"order_id": 1})
        worker = WebhookWorker(fresh_db, allow_private=False, backoff=FAST)
        try:
            assert await worker.run_once() == 1
        finally:
            await worker.stop()
        assert receiver.requests == []
        row = await delivery_row(fresh_db)
        assert row.status == "PENDING" and row.last_status_code is None
        assert "private" in row.last_error and SECRET not in row.last_error


# --------------------------------------------------------------- staff API


async def test_webhook_crud_and_secret_is_never_returned(fresh_db: Database) -> None:
    async with make_client(fresh_db, webhook_allow_private=True) as client:
        token = await staff_token(fresh_db)
        hook = await create_webhook(client, token, "http://127.0.0.1:9/a", isActive=False)
        assert hook["isActive"] is False
        body = await call(
            client,
            UPDATE,
            {
                "id": hook["id"],
                "input": {
                    "events": ["ORDER_UPDATED", "PAYMENT_CHANGED"],
                    "isActive": True,
                    "secret": "rotated-secret-0123456",
                },
            },
            token=token,
        )
        updated = body["data"]["webhookUpdate"]
        assert updated["errors"] == []
        assert sorted(updated["webhook"]["events"]) == ["ORDER_UPDATED", "PAYMENT_CHANGED"]
        assert updated["webhook"]["isActive"] is True
        listed = await call(client, f"{{ webhooks {{ {WEBHOOK_FIELDS} }} }}", token=token)
        assert [w["id"] for w in listed["data"]["webhooks"]] == [hook["id"]]
        assert SECRET not in str(listed) and "rotated-secret" not in str(listed)
        body = await call(client, "{ webhooks { secret } }", token=token)
        assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        body = await call(client, UPDATE, {"id": gid("Webhook", 999), "input": {}}, token=token)
        assert body["data"]["webhookUpdate"]["errors"][0]["code"] == "NOT_FOUND"
        body = await call(client, DELETE, {"id": hook["id"]}, token=token)
        assert body["data"]["webhookDelete"] == {"deletedId": hook["id"], "errors": []}
        assert await count(fresh_db, webhooks) == 0
        audit = await call(
            client, "{ auditLog { nodes { action objectType changedFields } } }", token=token
        )
        entries = [(e["action"], e["objectType"]) for e in audit["data"]["auditLog"]["nodes"]]
        assert entries[:3] == [
            ("webhookDelete", "Webhook"),
            ("webhookUpdate", "Webhook"),
            ("webhookCreate", "Webhook"),
        ]
        assert "rotated" not in str(audit)


async def test_reads_need_manage_staff(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        customer = await mint_token(fresh_db, await add_user(fresh_db, "c@example.com"))
        products = await mint_token(
            fresh_db,
            await add_user(
                fresh_db, "p@example.com", is_staff=True, permissions=["MANAGE_PRODUCTS"]
            ),
        )
        for token, code in (
            (None, "UNAUTHENTICATED"),
            (customer, "FORBIDDEN"),
            (products, "FORBIDDEN"),
        ):
            for query in ("{ webhooks { id } }", "{ webhookDeliveries { totalCount } }"):
                body = await call(client, query, token=token)
                assert [e["extensions"]["code"] for e in body["errors"]] == [code]


async def test_deliveries_filter_and_webhook_connection(fresh_db: Database) -> None:
    async with make_client(fresh_db, webhook_allow_private=True) as client:
        token = await staff_token(fresh_db)
        a = await create_webhook(client, token, "http://127.0.0.1:9/a", ["ORDER_CREATED"])
        b = await create_webhook(
            client, token, "http://127.0.0.1:9/b", ["ORDER_CREATED", "PAYMENT_CHANGED"]
        )
        async with fresh_db.transaction() as conn:
            record_event(conn, ORDER_CREATED, {"order_id": 1})
            record_event(conn, "payment_changed", {"payment_id": 3, "order_id": 1})
        assert len(await deliveries(client, token)) == 3
        assert len(await deliveries(client, token, webhookId=a["id"])) == 1
        [payment] = await deliveries(client, token, event="PAYMENT_CHANGED")
        assert '"paymentId":"' + ids.encode("Payment", 3) in payment["payload"]
        assert await deliveries(client, token, status="FAILED") == []
        body = await call(
            client,
            "{ webhooks { id deliveries(first: 1) { totalCount pageInfo { hasNextPage } "
            "nodes { event webhook { id } } } } }",
            token=token,
        )
        by_id = {w["id"]: w["deliveries"] for w in body["data"]["webhooks"]}
        assert by_id[b["id"]]["totalCount"] == 2 and by_id[b["id"]]["pageInfo"]["hasNextPage"]
        assert by_id[b["id"]]["nodes"][0]["webhook"]["id"] == b["id"]
        body = await call(
            client, DELIVERIES, {"filter": {"webhookId": gid("Product", 1)}}, token=token
        )
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_webhooks_with_their_deliveries_run_a_constant_number_of_statements(
    fresh_db: Database,
) -> None:
    """`webhooks { deliveries(first: n) { ... attemptLog } }`: the same statement count for
    1 webhook as for 6, for a page of 1 as for 5, and each webhook gets its own page."""
    query = """query($n: Int) { webhooks { id deliveries(first: $n) { totalCount
      pageInfo { hasNextPage } nodes { event webhook { id } attemptLog { statusCode } } } } }"""
    async with make_client(fresh_db, webhook_allow_private=True) as client:
        token = await staff_token(fresh_db)
        counts = []
        for hooks, first in ((1, 1), (6, 5)):
            while (
                len((await call(client, "{ webhooks { id } }", token=token))["data"]["webhooks"])
                < hooks
            ):
                await create_webhook(client, token, "http://127.0.0.1:9/h", ["ORDER_CREATED"])
            async with fresh_db.transaction() as conn:
                for order_id in range(3):
                    record_event(conn, ORDER_CREATED, {"order_id": order_id + 1})
            body = await call(client, query, {"n": first}, token=token)
            assert "errors" not in body, body
            webhooks = body["data"]["webhooks"]
            assert len(webhooks) == hooks
            for webhook in webhooks:
                page = webhook["deliveries"]
                assert len(page["nodes"]) == min(first, page["totalCount"])
                assert {n["webhook"]["id"] for n in page["nodes"]} <= {webhook["id"]}
            counts.append(body["extensions"]["sql"]["count"])
        assert counts[0] == counts[1], counts


# ----------------------------------------------------------- non-blocking


async def test_slow_receiver_does_not_block_requests(fresh_db: Database) -> None:
    async with (
        Receiver(SECRET, delay=10) as receiver,
        make_client(fresh_db, webhook_allow_private=True) as client,
    ):
        token = await staff_token(fresh_db)
        await create_webhook(client, token, receiver.url)
        worker = WebhookWorker(fresh_db, allow_private=True, poll_interval=0.05, timeout=10)
        worker.start()
        try:
            [variant] = await variant_ids(client, 1)
            await set_stock(client, token, variant, 5)
            await asyncio.sleep(0.3)  # the delivery is now in flight, waiting on the receiver
            assert worker._inflight
            for n in range(20):
                started = time.perf_counter()
                await set_stock(client, token, variant, 10 + n) if n % 2 else await call(
                    client, "{ products(first: 3) { nodes { name } } }"
                )
                assert time.perf_counter() - started < 1.0, n
        finally:
            await worker.stop(grace=0)
        assert receiver.accepted == []


# --------------------------------------------------------------- durability

ROOT = Path(__file__).resolve().parent.parent
SHOPQL = str(Path(sys.executable).parent / "shopql")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(tmp_path: Path, port: int, **env: str) -> asyncio.subprocess.Process:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    environ |= {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shop.db",
        "SECRET_KEY": TEST_SECRET,
        "SHOPQL_WEBHOOK_ALLOW_PRIVATE": "1",
        **env,
    }
    with (tmp_path / "server.log").open("a") as log:  # the child writes its own copy
        proc = await asyncio.create_subprocess_exec(
            SHOPQL, "serve", "--port", str(port), "--demo-products", "3",
            env=environ, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    import httpx

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.returncode is None, "server exited (see server.log)"
                try:
                    if (await http.get("/healthz", timeout=1)).status_code == 200:
                        return proc
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not start (see server.log)"
                await asyncio.sleep(0.1)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise


@pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")), reason="the CLI runs on the embedded SQLite"
)
async def test_delivery_survives_a_killed_server(tmp_path: Path) -> None:
    import httpx

    from models.accounts.passwords import Passwords
    from models.accounts.queries import create_user

    port = _free_port()
    # First life: no worker (the crash comes between the commit and the delivery).
    proc = await _serve(tmp_path, port, SHOPQL_WEBHOOK_WORKER="0")
    try:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/shop.db")
        async with db.transaction() as conn:
            user_id = await create_user(
                conn,
                email="ops@example.com",
                password_hash=await Passwords().hash("correct horse battery"),
                is_staff=True,
                permissions=["MANAGE_STAFF", "MANAGE_PRODUCTS"],
            )
        token = await mint_token(db, user_id)
        await db.dispose()
        receiver = Receiver(SECRET)
        await receiver.start()
        url = receiver.url
        await receiver.close()  # the receiver is down in the first life
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await create_webhook(http, token, url)  # type: ignore[arg-type]
            [variant] = await variant_ids(http, 1)  # type: ignore[arg-type]
            await set_stock(http, token, variant, 42)  # type: ignore[arg-type]
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # Second life: receiver up on the same port, worker on.
    await receiver.start(port=int(url.split(":")[2].split("/")[0]))
    proc = await _serve(tmp_path, port)
    try:
        await receiver.wait_for(lambda r: len(r.accepted) >= 1, within=20)
    finally:
        proc.terminate()
        await proc.wait()
        await receiver.close()
    [accepted] = receiver.accepted
    assert accepted.signature_ok and accepted.json["data"]["variantIds"] == [variant]
