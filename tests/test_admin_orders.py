"""Order administration through HTTP: orderFulfill, orderCancel, orderRefund (MANAGE_ORDERS);
their bad input, audit entries, events, and what concurrent staff can and cannot do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import add_user, mint_token
from checkout_flow import caller, gateway_of, gid, place_order, stock_of, stock_variants
from conftest import make_client

from models.accounts.tables import PERMISSIONS
from models.audit.tables import audit_log
from models.catalog.tables import variants
from models.db import Database
from models.events import Event
from models.orders.tables import fulfillment_lines, fulfillments, order_lines, orders
from models.payments.gateways import RefundResult
from models.payments.tables import dummy_charges, payments, refunds
from resolvers.orders_admin import recover_refunds

MONEY = "{ amount currency }"
ERRORS = "errors { field code message }"
ORDER = f"""order {{ id status paymentStatus total {MONEY}
  lines {{ id quantity quantityFulfilled variant {{ id quantityAvailable }} }}
  payments {{ status amount {MONEY} refundedAmount {MONEY} }}
  fulfillments {{ id trackingNumber createdAt lines {{ quantity orderLine {{ id sku }} }} }} }}"""
FULFILL = f"""mutation($id: ID!, $lines: [OrderFulfillLineInput!], $tracking: String) {{
  orderFulfill(id: $id, lines: $lines, trackingNumber: $tracking) {{ {ORDER} {ERRORS} }} }}"""
CANCEL = f"""mutation($id: ID!) {{ orderCancel(id: $id) {{ {ORDER} {ERRORS} }} }}"""
REFUND = f"""mutation($id: ID!, $amount: Decimal) {{
  orderRefund(id: $id, amount: $amount) {{ {ORDER} {ERRORS} }} }}"""
ORDER_QUERY = f"query($id: ID!) {{ {ORDER.replace('order {', 'order(id: $id) {', 1)} }}"


@dataclass
class Shop:
    db: Database
    client: httpx.AsyncClient
    admin: str
    events: list[Event]

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
        assert "errors" not in body, body["errors"]
        return body

    async def mutate(self, query: str, **variables: Any) -> dict[str, Any]:
        body = await self.call(query, variables)
        (payload,) = body["data"].values()
        assert isinstance(payload, dict)
        return payload

    async def order(self, order_id: str) -> dict[str, Any]:
        found: dict[str, Any] = (await self.call(ORDER_QUERY, {"id": order_id}))["data"]["order"]
        return found

    async def place(self, lines: list[tuple[int, int]]) -> dict[str, Any]:
        """A paid order (a guest's, through checkout); as orderFulfill returns orders."""
        placed = await place_order(caller(self.client), lines)
        return await self.order(placed["id"])


@pytest.fixture
async def shop(fresh_db: Database) -> AsyncIterator[Shop]:
    admin_id = await add_user(fresh_db, "admin@example.com", is_staff=True, permissions=PERMISSIONS)
    events: list[Event] = []
    remove = fresh_db.events.add_listener(events.append)
    async with make_client(fresh_db) as client:
        yield Shop(fresh_db, client, await mint_token(fresh_db, admin_id), events)
    remove()


def errors(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["errors"]]


def key_of(global_id: str) -> int:
    import base64

    return int(base64.b64decode(global_id).decode().split(":")[1])


async def snapshot(db: Database) -> dict[str, Any]:
    """Everything an order admin mutation may write."""
    async with db.read() as conn:

        async def rows(stmt: Any) -> list[Any]:
            return [tuple(r) for r in (await conn.execute(stmt)).all()]

        return {
            "orders": await rows(
                sa.select(orders.c.id, orders.c.status, orders.c.payment_status).order_by(
                    orders.c.id
                )
            ),
            "lines": await rows(
                sa.select(order_lines.c.id, order_lines.c.quantity_fulfilled).order_by(
                    order_lines.c.id
                )
            ),
            "payments": await rows(
                sa.select(payments.c.id, payments.c.status, payments.c.refunded_amount).order_by(
                    payments.c.id
                )
            ),
            "stock": await rows(
                sa.select(variants.c.id, variants.c.quantity).order_by(variants.c.id)
            ),
            "fulfillments": await rows(sa.select(sa.func.count()).select_from(fulfillments)),
            "refunds": await rows(sa.select(sa.func.count()).select_from(refunds)),
            "audit": await rows(sa.select(sa.func.count()).select_from(audit_log)),
            "ledger": await rows(
                sa.select(dummy_charges.c.reference, dummy_charges.c.refunded_amount).order_by(
                    dummy_charges.c.reference
                )
            ),
        }


async def audit_entries(db: Database, action: str) -> list[tuple[str, str, str]]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(audit_log.c.object_type, audit_log.c.object_key, audit_log.c.changed_fields)
            .where(audit_log.c.action == action)
            .order_by(audit_log.c.id)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def ledger_refunded(db: Database) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.sum(dummy_charges.c.refunded_amount)))).scalar()
            or 0
        )


# ------------------------------------------------------------------------------ orderFulfill


async def test_fulfilling_everything_left_records_a_fulfillment(shop: Shop) -> None:
    v1, v2 = await stock_variants(shop.db, 2, prices=[1000, 250])
    order = await shop.place([(v1, 2), (v2, 3)])
    assert order["status"] == "UNFULFILLED" and order["fulfillments"] == []
    order_key = key_of(order["id"])
    created = [e.payload for e in shop.events if e.name == "order_created"]
    assert created == [{"order_id": order_key}]
    paid = [e.payload for e in shop.events if e.name == "payment_changed"]
    assert [p["order_id"] for p in paid] == [order_key]

    payload = await shop.mutate(FULFILL, id=order["id"], tracking="1Z999AA10123456784")
    assert payload["errors"] == []
    done = payload["order"]
    assert done["status"] == "FULFILLED"
    assert [line["quantityFulfilled"] for line in done["lines"]] == [2, 3]
    (fulfillment,) = done["fulfillments"]
    assert fulfillment["trackingNumber"] == "1Z999AA10123456784"
    assert fulfillment["id"].startswith("RnVsZmlsbG1lbnQ6")  # "Fulfillment:"
    assert sorted((fl["orderLine"]["id"], fl["quantity"]) for fl in fulfillment["lines"]) == sorted(
        (line["id"], line["quantity"]) for line in order["lines"]
    )
    assert await audit_entries(shop.db, "orderFulfill") == [
        ("Order", str(key_of(order["id"])), '["trackingNumber"]')
    ]
    updated = [e for e in shop.events if e.name == "order_updated"]
    assert updated and updated[-1].payload["order_id"] == key_of(order["id"])

    again = await shop.mutate(FULFILL, id=order["id"])
    assert errors(again) == [("id", "INVALID_STATE")]
    assert again["errors"][0]["message"] == "order is FULFILLED"
    assert again["order"] is None


async def test_partial_fulfillments_move_the_status_step_by_step(shop: Shop) -> None:
    v1, v2 = await stock_variants(shop.db, 2)
    order = await shop.place([(v1, 3), (v2, 1)])
    first, second = order["lines"]

    payload = await shop.mutate(
        FULFILL, id=order["id"], lines=[{"orderLineId": first["id"], "quantity": 2}]
    )
    assert payload["errors"] == []
    assert payload["order"]["status"] == "PARTIALLY_FULFILLED"
    assert [line["quantityFulfilled"] for line in payload["order"]["lines"]] == [2, 0]

    payload = await shop.mutate(
        FULFILL,
        id=order["id"],
        lines=[
            {"orderLineId": second["id"], "quantity": 1},
            {"orderLineId": first["id"], "quantity": 1},
        ],
    )
    assert payload["errors"] == []
    assert payload["order"]["status"] == "FULFILLED"
    assert len(payload["order"]["fulfillments"]) == 2
    assert [fl["quantity"] for fl in payload["order"]["fulfillments"][0]["lines"]] == [2]
    assert payload["order"]["fulfillments"][0]["trackingNumber"] is None


async def test_bad_fulfillment_input_is_a_payload_error_and_writes_nothing(shop: Shop) -> None:
    v1, v2 = await stock_variants(shop.db, 2)
    order = await shop.place([(v1, 2), (v2, 1)])
    other = await shop.place([(v1, 1)])
    first, second = order["lines"]
    foreign = other["lines"][0]["id"]
    before = await snapshot(shop.db)
    cases: list[tuple[dict[str, Any], list[tuple[str | None, str]]]] = [
        (
            {"lines": [{"orderLineId": first["id"], "quantity": 3}]},
            [("lines.0.quantity", "INVALID")],
        ),
        (
            {
                "lines": [
                    {"orderLineId": second["id"], "quantity": 1},
                    {"orderLineId": second["id"], "quantity": 1},
                ]
            },
            [("lines.1.orderLineId", "INVALID")],
        ),
        (
            {"lines": [{"orderLineId": first["id"], "quantity": 0}]},
            [("lines.0.quantity", "INVALID")],
        ),
        (
            {"lines": [{"orderLineId": first["id"], "quantity": -5}]},
            [("lines.0.quantity", "INVALID")],
        ),
        (
            {"lines": [{"orderLineId": foreign, "quantity": 1}]},
            [("lines.0.orderLineId", "INVALID")],
        ),
        (
            {"lines": [{"orderLineId": order["id"], "quantity": 1}]},
            [("lines.0.orderLineId", "INVALID")],
        ),
        (
            {"lines": [{"orderLineId": "not-an-id", "quantity": 1}]},
            [("lines.0.orderLineId", "INVALID")],
        ),
        ({"lines": []}, [("lines", "REQUIRED")]),
        ({"tracking": "x" * 10_000}, [("trackingNumber", "INVALID")]),
        ({"tracking": "abc\x00def"}, [("trackingNumber", "INVALID")]),
        ({"tracking": "abc\x1b[31m"}, [("trackingNumber", "INVALID")]),
        ({"id": gid("Product", 1)}, [("id", "INVALID")]),
        ({"id": gid("Order", 999_999)}, [("id", "NOT_FOUND")]),
        ({"id": gid("Order", 2**40)}, [("id", "NOT_FOUND")]),
        ({"id": "%%%"}, [("id", "INVALID")]),
    ]
    for variables, expected in cases:
        payload = await shop.mutate(FULFILL, **{"id": order["id"], **variables})
        assert errors(payload) == expected, (variables, payload)
        assert payload["order"] is None
    # Several problems at once are all reported.
    payload = await shop.mutate(
        FULFILL,
        id=order["id"],
        lines=[
            {"orderLineId": first["id"], "quantity": 9},
            {"orderLineId": foreign, "quantity": 1},
        ],
    )
    assert errors(payload) == [("lines.0.quantity", "INVALID"), ("lines.1.orderLineId", "INVALID")]
    assert "at most 2 left" in payload["errors"][0]["message"]
    assert await snapshot(shop.db) == before


async def test_a_lone_surrogate_is_refused_as_malformed_json(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1)
    order = await shop.place([(v1, 1)])
    before = await snapshot(shop.db)
    response = await shop.client.post(
        "/graphql",
        content=json.dumps(
            {"query": FULFILL, "variables": {"id": order["id"], "tracking": "abc\ud800"}}
        ),
        headers={"content-type": "application/json", "authorization": f"Bearer {shop.admin}"},
    )
    assert response.status_code == 400
    assert await snapshot(shop.db) == before


async def test_canceled_orders_cannot_be_fulfilled(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1)
    order = await shop.place([(v1, 1)])
    assert (await shop.mutate(CANCEL, id=order["id"]))["errors"] == []
    payload = await shop.mutate(FULFILL, id=order["id"])
    assert errors(payload) == [("id", "INVALID_STATE")]
    assert payload["errors"][0]["message"] == "order is CANCELED"


async def test_customers_see_their_fulfillments(shop: Shop) -> None:
    from checkout_flow import add_signed_in_customer

    (v1,) = await stock_variants(shop.db, 1)
    _, customer = await add_signed_in_customer(shop.db, shop.client, "buyer@example.com")
    placed = await place_order(customer, [(v1, 2)], email="buyer@example.com")
    await shop.mutate(FULFILL, id=placed["id"], tracking="TRACK-1")
    body = await customer(
        "query($id: ID!) { order(id: $id) { status fulfillments { trackingNumber lines { quantity } } } }",
        {"id": placed["id"]},
    )
    assert body["data"]["order"] == {
        "status": "FULFILLED",
        "fulfillments": [{"trackingNumber": "TRACK-1", "lines": [{"quantity": 2}]}],
    }


async def test_concurrent_whole_order_fulfillments_ship_once(shop: Shop) -> None:
    v1, v2 = await stock_variants(shop.db, 2)
    order = await shop.place([(v1, 2), (v2, 2)])
    results = await asyncio.gather(*(shop.mutate(FULFILL, id=order["id"]) for _ in range(10)))
    assert sum(1 for r in results if r["errors"] == []) == 1
    assert all(errors(r) == [("id", "INVALID_STATE")] for r in results if r["errors"])
    assert [line["quantityFulfilled"] for line in (await shop.order(order["id"]))["lines"]] == [
        2,
        2,
    ]
    async with shop.db.read() as conn:
        shipped = (
            await conn.execute(sa.select(sa.func.sum(fulfillment_lines.c.quantity)))
        ).scalar()
    assert shipped == 4


async def test_concurrent_partial_fulfillments_never_exceed_the_quantity(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1)
    order = await shop.place([(v1, 3)])
    line = order["lines"][0]["id"]
    results = await asyncio.gather(
        *(
            shop.mutate(FULFILL, id=order["id"], lines=[{"orderLineId": line, "quantity": 1}])
            for _ in range(10)
        )
    )
    assert sum(1 for r in results if r["errors"] == []) == 3
    for r in results:
        if r["errors"]:
            assert errors(r) in ([("id", "INVALID_STATE")], [("lines.0.quantity", "INVALID")]), r
    final = await shop.order(order["id"])
    assert final["status"] == "FULFILLED"
    assert final["lines"][0]["quantityFulfilled"] == 3
    assert sum(fl["quantity"] for f in final["fulfillments"] for fl in f["lines"]) == 3


# ------------------------------------------------------------------------------ orderCancel


async def test_cancel_restocks_refunds_and_reports_events(shop: Shop) -> None:
    v1, v2 = await stock_variants(shop.db, 2, quantity=10, prices=[1000, 2000])
    order = await shop.place([(v1, 2), (v2, 1)])
    assert await stock_of(shop.db, [v1, v2]) == {v1: 8, v2: 9}
    shop.events.clear()

    payload = await shop.mutate(CANCEL, id=order["id"])
    assert payload["errors"] == []
    done = payload["order"]
    assert done["status"] == "CANCELED" and done["paymentStatus"] == "REFUNDED"
    (payment,) = done["payments"]
    assert payment["status"] == "REFUNDED"
    assert payment["refundedAmount"] == payment["amount"] == order["total"]
    assert [line["variant"]["quantityAvailable"] for line in done["lines"]] == [10, 10]
    assert await stock_of(shop.db, [v1, v2]) == {v1: 10, v2: 10}
    assert await ledger_refunded(shop.db) == 4499  # 40.00 + 4.99 shipping
    names = [e.name for e in shop.events]
    assert "variant_stock_changed" in names and "payment_changed" in names
    stock_event = next(e for e in shop.events if e.name == "variant_stock_changed")
    assert stock_event.payload == {"variant_ids": sorted([v1, v2])}
    assert len(await audit_entries(shop.db, "orderCancel")) == 1

    again = await shop.mutate(CANCEL, id=order["id"])
    assert errors(again) == [("id", "INVALID_STATE")]
    assert again["errors"][0]["message"] == "order is CANCELED"


async def test_cancel_skips_deleted_variants(shop: Shop) -> None:
    v1, v2 = await stock_variants(shop.db, 2, quantity=5)
    order = await shop.place([(v1, 1), (v2, 2)])
    async with shop.db.transaction() as conn:
        await conn.execute(variants.delete().where(variants.c.id == v1))
    payload = await shop.mutate(CANCEL, id=order["id"])
    assert payload["errors"] == []
    assert payload["order"]["lines"][0]["variant"] is None
    assert await stock_of(shop.db, [v1, v2]) == {v2: 5}


async def test_only_unfulfilled_orders_can_be_canceled(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1)
    order = await shop.place([(v1, 2)])
    line = order["lines"][0]["id"]
    await shop.mutate(FULFILL, id=order["id"], lines=[{"orderLineId": line, "quantity": 1}])
    before = await snapshot(shop.db)
    payload = await shop.mutate(CANCEL, id=order["id"])
    assert errors(payload) == [("id", "INVALID_STATE")]
    assert payload["errors"][0]["message"] == "order is PARTIALLY_FULFILLED"
    for bad, code in ((gid("Product", 1), "INVALID"), (gid("Order", 424242), "NOT_FOUND")):
        assert errors(await shop.mutate(CANCEL, id=bad)) == [("id", code)]
    assert await snapshot(shop.db) == before


async def test_a_refused_cancel_refund_keeps_the_order_canceled(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, quantity=5)
    order = await shop.place([(v1, 1)])
    gateway = gateway_of(shop.client)
    original = gateway.refund

    async def refuse(**kw: Any) -> RefundResult:
        return RefundResult(False, "the bank said no")

    gateway.refund = refuse
    try:
        payload = await shop.mutate(CANCEL, id=order["id"])
    finally:
        gateway.refund = original
    assert errors(payload) == [(None, "PAYMENT_ERROR")]
    assert "the bank said no" in payload["errors"][0]["message"]
    assert payload["order"]["status"] == "CANCELED"
    assert payload["order"]["paymentStatus"] == "PAID"
    assert await stock_of(shop.db, [v1]) == {v1: 5}
    # The refund can be made afterwards.
    payload = await shop.mutate(REFUND, id=order["id"])
    assert payload["errors"] == []
    assert payload["order"]["paymentStatus"] == "REFUNDED"


# ------------------------------------------------------------------------------ orderRefund


async def test_partial_then_full_refunds(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, prices=[10000])
    order = await shop.place([(v1, 1)])
    assert order["total"]["amount"] == "100.00"

    payload = await shop.mutate(REFUND, id=order["id"], amount="30.00")
    assert payload["errors"] == []
    assert payload["order"]["paymentStatus"] == "PARTIALLY_REFUNDED"
    assert payload["order"]["payments"][0]["refundedAmount"]["amount"] == "30.00"
    assert payload["order"]["payments"][0]["status"] == "PARTIALLY_REFUNDED"

    payload = await shop.mutate(REFUND, id=order["id"], amount="70.01")
    assert errors(payload) == [("amount", "INVALID")]
    assert payload["errors"][0]["message"] == "at most 70.00 USD can be refunded"

    payload = await shop.mutate(REFUND, id=order["id"])
    assert payload["errors"] == []
    assert payload["order"]["paymentStatus"] == "REFUNDED"
    assert payload["order"]["payments"][0]["refundedAmount"]["amount"] == "100.00"
    assert await ledger_refunded(shop.db) == 10000
    assert await audit_entries(shop.db, "orderRefund") == [
        ("Order", str(key_of(order["id"])), '["amount"]'),
        ("Order", str(key_of(order["id"])), "[]"),
    ]

    payload = await shop.mutate(REFUND, id=order["id"])
    assert errors(payload) == [("id", "INVALID_STATE")]
    assert payload["errors"][0]["message"] == "payment is REFUNDED: nothing to refund"


async def test_bad_refund_amounts_change_nothing(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, prices=[10000])
    order = await shop.place([(v1, 1)])
    before = await snapshot(shop.db)
    for amount in ("0", "-1", "0.001", "1.5e-3", "100.01", "1e9"):
        payload = await shop.mutate(REFUND, id=order["id"], amount=amount)
        assert errors(payload) == [("amount", "INVALID")], (amount, payload)
    for bad, code in (
        (gid("Product", 1), "INVALID"),
        (gid("Order", 424242), "NOT_FOUND"),
        ("", "INVALID"),
        ("x" * 10_000, "INVALID"),
    ):
        assert errors(await shop.mutate(REFUND, id=bad, amount="1.00")) == [("id", code)]
    assert await snapshot(shop.db) == before


async def test_a_refused_refund_changes_nothing(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, prices=[10000])
    order = await shop.place([(v1, 1)])
    before = await snapshot(shop.db)
    gateway = gateway_of(shop.client)
    original = gateway.refund

    async def refuse(**kw: Any) -> RefundResult:
        return RefundResult(False, "insufficient balance")

    gateway.refund = refuse
    try:
        payload = await shop.mutate(REFUND, id=order["id"], amount="10.00")
    finally:
        gateway.refund = original
    assert errors(payload) == [(None, "PAYMENT_ERROR")]
    assert payload["order"] is None
    after = await snapshot(shop.db)
    assert after["refunds"] == [(1,)]  # the FAILED attempt is kept for the record
    assert {**after, "refunds": None} == {**before, "refunds": None}
    async with shop.db.read() as conn:
        assert (await conn.execute(sa.select(refunds.c.status))).scalar_one() == "FAILED"


async def test_a_gateway_crash_keeps_the_reservation_until_recovered(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, prices=[10000])
    order = await shop.place([(v1, 1)])
    gateway = gateway_of(shop.client)
    original = gateway.refund

    async def crash(**kw: Any) -> RefundResult:
        raise ConnectionError("connection reset")

    gateway.refund = crash
    try:
        payload = await shop.mutate(REFUND, id=order["id"], amount="60.00")
        assert errors(payload) == [(None, "PAYMENT_ERROR")]
        # The 60.00 stays reserved: another refund cannot take it meanwhile.
        payload = await shop.mutate(REFUND, id=order["id"], amount="50.00")
        assert errors(payload) == [("amount", "INVALID")]
        assert payload["errors"][0]["message"] == "at most 40.00 USD can be refunded"
    finally:
        gateway.refund = original
    async with shop.db.read() as conn:
        assert (await conn.execute(sa.select(refunds.c.status))).scalars().all() == ["PENDING"]

    counts = await recover_refunds(shop.db, {"dummy": gateway}, older_than=timedelta(seconds=-60))
    assert counts == {"succeeded": 1, "failed": 0, "skipped": 0}
    final = await shop.order(order["id"])
    assert final["payments"][0]["refundedAmount"]["amount"] == "60.00"
    assert final["paymentStatus"] == "PARTIALLY_REFUNDED"
    assert await ledger_refunded(shop.db) == 6000
    # Recovering again finds nothing, and never refunds twice.
    assert await recover_refunds(shop.db, {"dummy": gateway}, older_than=timedelta(0)) == {
        "succeeded": 0,
        "failed": 0,
        "skipped": 0,
    }


async def test_dummy_refunds_are_idempotent_by_key(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, prices=[10000])
    await shop.place([(v1, 1)])
    gateway = gateway_of(shop.client)
    async with shop.db.read() as conn:
        reference = (await conn.execute(sa.select(dummy_charges.c.reference))).scalar_one()
    for _ in range(3):
        result = await gateway.refund(
            reference=reference, amount=4000, currency="USD", idempotency_key="same"
        )
        assert result.ok
    assert await ledger_refunded(shop.db) == 4000
    other = await gateway.refund(
        reference=reference, amount=100, currency="USD", idempotency_key="same"
    )
    assert not other.ok


async def test_concurrent_refunds_never_exceed_what_was_paid(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, prices=[10000])
    order = await shop.place([(v1, 1)])
    results = await asyncio.gather(
        *(shop.mutate(REFUND, id=order["id"], amount="40.00") for _ in range(10))
    )
    succeeded = [r for r in results if r["errors"] == []]
    assert len(succeeded) == 2
    for r in results:
        if r["errors"]:
            assert errors(r) == [("amount", "INVALID")], r
    final = await shop.order(order["id"])
    assert final["payments"][0]["refundedAmount"]["amount"] == "80.00"
    assert final["paymentStatus"] == "PARTIALLY_REFUNDED"
    assert await ledger_refunded(shop.db) == 8000
    async with shop.db.read() as conn:
        states = (await conn.execute(sa.select(refunds.c.status, refunds.c.amount))).all()
    assert sorted(states) == [("SUCCEEDED", 4000), ("SUCCEEDED", 4000)]


async def test_concurrent_cancel_and_fulfill_one_wins(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1, quantity=10)
    order = await shop.place([(v1, 2)])
    cancel, fulfill = await asyncio.gather(
        shop.mutate(CANCEL, id=order["id"]), shop.mutate(FULFILL, id=order["id"])
    )
    assert [cancel["errors"] == [], fulfill["errors"] == []].count(True) == 1
    final = await shop.order(order["id"])
    if cancel["errors"] == []:
        assert final["status"] == "CANCELED" and await stock_of(shop.db, [v1]) == {v1: 10}
    else:
        assert final["status"] == "FULFILLED" and await stock_of(shop.db, [v1]) == {v1: 8}


async def test_order_listing_with_fulfillments_has_no_n_plus_one(shop: Shop) -> None:
    (v1,) = await stock_variants(shop.db, 1)
    for _ in range(4):
        placed = await shop.place([(v1, 1)])
        await shop.mutate(FULFILL, id=placed["id"], tracking="T")
    query = """query($n: Int) { orders(first: $n) { nodes { id
      fulfillments { id trackingNumber lines { quantity orderLine { sku } } } } } }"""
    counts = []
    for n in (1, 4):
        body = await shop.call(query, {"n": n})
        assert len(body["data"]["orders"]["nodes"]) == n
        counts.append(body["extensions"]["sql"]["count"])
    assert counts[0] == counts[1], counts
