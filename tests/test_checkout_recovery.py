"""Completions a client abandons between reserving and settling are recovered: completed
when the gateway holds the charge, otherwise the stock goes back and the checkout reopens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import GraphQL, graphql_caller, make_client

from models.catalog.tables import variants
from models.checkout.tables import checkout_attempts, checkouts
from models.db import Database
from models.orders.tables import orders
from models.payments.gateways import ChargeResult, DummyGateway
from models.payments.tables import payments
from resolvers.checkout import recover_stale

ADDRESS = {"firstName": "Ann", "lastName": "Lee", "streetAddress1": "1 Main St", "city": "Town",
           "postalCode": "12345", "countryCode": "US"}  # fmt: skip


async def _ready_checkout(gql: GraphQL) -> tuple[str, str, int]:
    products = await gql(
        "{ products(first: 1, filter: {inStock: true}) { nodes { variants { id quantityAvailable } } } }"
    )
    variant = next(
        v
        for v in products["data"]["products"]["nodes"][0]["variants"]
        if v["quantityAvailable"] > 1
    )
    created = await gql(
        'mutation($v: ID!) { checkoutCreate(input: {lines: [{variantId: $v, quantity: 2}], email: "a@b.co"}) { checkout { id } errors { code } } }',
        {"v": variant["id"]},
    )
    checkout_id = created["data"]["checkoutCreate"]["checkout"]["id"]
    await gql(
        "mutation($c: ID!, $a: AddressInput!) { checkoutShippingAddressUpdate(checkoutId: $c, address: $a) { errors { code } } }",
        {"c": checkout_id, "a": ADDRESS},
    )
    methods = await gql("{ shippingMethods { id name } }")
    standard = next(m["id"] for m in methods["data"]["shippingMethods"] if m["name"] == "Standard")
    await gql(
        "mutation($c: ID!, $m: ID!) { checkoutShippingMethodUpdate(checkoutId: $c, shippingMethodId: $m) { errors { code } } }",
        {"c": checkout_id, "m": standard},
    )
    return checkout_id, variant["id"], variant["quantityAvailable"]


COMPLETE = """mutation($c: ID!) { checkoutComplete(checkoutId: $c,
  payment: {gateway: "dummy", token: "tok_visa"}, idempotencyKey: "lost-response") {
  order { id } errors { code } } }"""


async def _stock(db: Database, variant_gid: str) -> int:
    import base64

    variant_id = int(base64.b64decode(variant_gid).decode().split(":")[1])
    async with db.read() as conn:
        return int(
            (
                await conn.execute(
                    sa.select(variants.c.quantity).where(variants.c.id == variant_id)
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("charged", [False, True], ids=["never-charged", "charged-response-lost"])
async def test_abandoned_completion_is_settled(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch, charged: bool
) -> None:
    original = DummyGateway.charge

    async def flaky(self: DummyGateway, **kw: Any) -> ChargeResult:
        if charged:
            await original(self, **kw)  # the PSP charged; the answer never came back
        return ChargeResult("error", message="connection reset")

    async with make_client(fresh_db) as client:
        gql = graphql_caller(client)
        checkout_id, variant_id, before = await _ready_checkout(gql)
        monkeypatch.setattr(DummyGateway, "charge", flaky)
        body = await gql(COMPLETE, {"c": checkout_id})
        assert body["data"]["checkoutComplete"]["errors"] == [{"code": "PAYMENT_ERROR"}]
        assert await _stock(fresh_db, variant_id) == before - 2  # held while unresolved
        monkeypatch.setattr(DummyGateway, "charge", original)

    # The client never retries. Recent attempts are left alone; stale ones are settled.
    gateways = {"dummy": DummyGateway(fresh_db)}
    assert await recover_stale(fresh_db, gateways, older_than=timedelta(hours=1)) == {
        "completed": 0, "released": 0, "skipped": 0}  # fmt: skip
    counts = await recover_stale(fresh_db, gateways, older_than=timedelta(0))
    assert counts == {"completed": int(charged), "released": int(not charged), "skipped": 0}

    async with fresh_db.read() as conn:
        attempt = (await conn.execute(sa.select(checkout_attempts))).one()
        checkout = (
            await conn.execute(
                sa.select(checkouts.c.status).where(checkouts.c.id == attempt.checkout_id)
            )
        ).scalar_one()
        order_count = (
            await conn.execute(sa.select(sa.func.count()).select_from(orders))
        ).scalar_one()
        payment = (await conn.execute(sa.select(payments))).one()
    if charged:
        assert (attempt.state, checkout, order_count, payment.status) == (
            "COMPLETED",
            "COMPLETED",
            1,
            "PAID",
        )
        assert payment.order_id == attempt.order_id
        assert await _stock(fresh_db, variant_id) == before - 2
    else:
        assert (attempt.state, checkout, order_count, payment.status) == (
            "FAILED",
            "OPEN",
            0,
            "FAILED",
        )
        assert await _stock(fresh_db, variant_id) == before
    # Running it again finds nothing left to do.
    assert await recover_stale(fresh_db, gateways, older_than=timedelta(0)) == {
        "completed": 0, "released": 0, "skipped": 0}  # fmt: skip
