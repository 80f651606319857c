"""The Stripe gateway against a mocked Stripe API (respx, no network), checkoutComplete
through it, and the signed webhook that pushes payment status changes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
import sqlalchemy as sa
import stripe
from conftest import GraphQL, graphql_caller, make_client

from models.db import Database
from models.orders.tables import orders
from models.payments.gateways import ChargeResult, RefundResult
from models.payments.stripe_gateway import StripeGateway, from_stripe_amount, to_stripe_amount
from models.payments.tables import payments

API = "https://api.stripe.com/v1"
API_KEY = "sk_test_x"
WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
ERRORS = "errors { field code message }"
ORDER = """id paymentStatus total { amount currency }
  payments { gateway status amount { amount } refundedAmount { amount } pspReference }"""
COMPLETE = f"""
mutation($id: ID!, $token: String!, $key: String!) {{
  checkoutComplete(checkoutId: $id, payment: {{gateway: "stripe", token: $token}},
                   idempotencyKey: $key) {{ order {{ {ORDER} }} {ERRORS} }}
}}"""
ADDRESS = {
    "firstName": "Ann",
    "lastName": "Lee",
    "streetAddress1": "1 Main Street",
    "city": "Springfield",
    "postalCode": "12345",
    "countryCode": "US",
}


@pytest.fixture
def stripe_api() -> Iterator[respx.MockRouter]:
    """Stripe's API, mocked; a request to anything not routed fails the call."""
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def no_retry_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.0)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.0)


def gateway(retries: int = 0) -> StripeGateway:
    return StripeGateway(API_KEY, max_network_retries=retries)


def intent(intent_id: str = "pi_123", status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {"id": intent_id, "object": "payment_intent", "status": status, **extra}


def card_error(message: str, intent_id: str = "pi_declined") -> httpx.Response:
    return httpx.Response(
        402,
        json={
            "error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": message,
                "payment_intent": intent(intent_id, "requires_payment_method"),
            }
        },
    )


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


# --------------------------------------------------------------------------- the gateway


def test_accepts_payment_methods_and_card_tokens() -> None:
    g = gateway()
    for token in ("pm_card_visa", "pm_1MqLiJLkdIwHu7ixUEgbFdYF", "tok_visa", "tok_chargeDeclined"):
        assert g.accepts(token), token
    for token in ("", "visa", "pm_", "pi_123", "pm_card visa", "tok_visa\n", "card_123"):
        assert not g.accepts(token), token


async def test_charge_creates_and_confirms_a_payment_intent(
    stripe_api: respx.MockRouter,
) -> None:
    route = stripe_api.post("/payment_intents").respond(200, json=intent("pi_ok"))

    result = await gateway().charge(
        amount=1999, currency="USD", token="pm_card_visa", idempotency_key="key-1"
    )

    assert result == ChargeResult("succeeded", "pi_ok")
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["idempotency-key"] == "key-1"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(request) == {
        "amount": "1999",
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "payment_method_types[0]": "card",
        "error_on_requires_action": "true",
        "metadata[shopql_idempotency_key]": "key-1",
    }


async def test_charge_with_a_card_token_sends_it_as_payment_method_data(
    stripe_api: respx.MockRouter,
) -> None:
    route = stripe_api.post("/payment_intents").respond(200, json=intent("pi_tok"))
    result = await gateway().charge(
        amount=500, currency="EUR", token="tok_visa", idempotency_key="key-2"
    )
    assert result.outcome == "succeeded"
    sent = form(route.calls.last.request)
    assert "payment_method" not in sent
    assert sent["payment_method_data[type]"] == "card"
    assert sent["payment_method_data[card][token]"] == "tok_visa"
    assert sent["currency"] == "eur"


async def test_card_decline_is_declined_with_stripes_message(
    stripe_api: respx.MockRouter,
) -> None:
    stripe_api.post("/payment_intents").mock(
        return_value=card_error("Your card has insufficient funds.")
    )
    result = await gateway().charge(
        amount=1999, currency="USD", token="pm_card_visa", idempotency_key="key-3"
    )
    assert result == ChargeResult("declined", "pi_declined", "Your card has insufficient funds.")


@pytest.mark.parametrize("status", ["requires_action", "requires_payment_method", "processing"])
async def test_an_intent_that_did_not_succeed_is_declined(
    stripe_api: respx.MockRouter, status: str
) -> None:
    stripe_api.post("/payment_intents").respond(200, json=intent("pi_open", status))
    result = await gateway().charge(
        amount=1999, currency="USD", token="pm_card_visa", idempotency_key="key-4"
    )
    assert result.outcome == "declined"
    assert result.reference == "pi_open"
    assert result.message


async def test_unknown_payment_method_is_invalid(stripe_api: respx.MockRouter) -> None:
    stripe_api.post("/payment_intents").respond(
        400,
        json={
            "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "param": "payment_method",
                "message": "No such PaymentMethod: 'pm_nope'",
            }
        },
    )
    result = await gateway().charge(
        amount=1999, currency="USD", token="pm_nope", idempotency_key="key-5"
    )
    assert result.outcome == "invalid"
    assert "pm_nope" in result.message


async def test_a_token_of_another_kind_is_invalid_without_calling_stripe(
    stripe_api: respx.MockRouter,
) -> None:
    route = stripe_api.post("/payment_intents").respond(200, json=intent())
    result = await gateway().charge(
        amount=1999, currency="USD", token="card_123", idempotency_key="key-6"
    )
    assert result.outcome == "invalid"
    assert not route.called


@pytest.mark.parametrize(
    "response",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(500, json={"error": {"type": "api_error", "message": "boom"}}),
        httpx.Response(
            429, json={"error": {"type": "invalid_request_error", "code": "rate_limit"}}
        ),
        httpx.Response(401, json={"error": {"type": "invalid_request_error", "message": "key"}}),
    ],
    ids=["connect", "timeout", "5xx", "rate-limit", "bad-key"],
)
async def test_network_and_api_failures_are_retryable_errors(
    stripe_api: respx.MockRouter, response: Any
) -> None:
    route = stripe_api.post("/payment_intents").mock(side_effect=[response])
    result = await gateway().charge(
        amount=1999, currency="USD", token="pm_card_visa", idempotency_key="key-7"
    )
    assert result.outcome == "error"
    assert route.call_count == 1


async def test_retries_reuse_the_idempotency_key(stripe_api: respx.MockRouter) -> None:
    route = stripe_api.post("/payment_intents").mock(
        side_effect=[httpx.ConnectError("reset"), httpx.Response(200, json=intent("pi_retry"))]
    )
    result = await gateway(retries=2).charge(
        amount=1999, currency="USD", token="pm_card_visa", idempotency_key="key-8"
    )
    assert result == ChargeResult("succeeded", "pi_retry")
    assert [c.request.headers["idempotency-key"] for c in route.calls] == ["key-8", "key-8"]


async def test_refund_creates_a_refund_for_the_intent(stripe_api: respx.MockRouter) -> None:
    route = stripe_api.post("/refunds").respond(
        200, json={"id": "re_1", "object": "refund", "status": "succeeded"}
    )
    result = await gateway().refund(
        reference="pi_123", amount=500, currency="USD", idempotency_key="refund-1"
    )
    assert result == RefundResult(True)
    request = route.calls.last.request
    assert request.headers["idempotency-key"] == "refund-1"
    assert form(request) == {"payment_intent": "pi_123", "amount": "500"}


async def test_refused_and_failed_refunds_are_not_ok(stripe_api: respx.MockRouter) -> None:
    stripe_api.post("/refunds").mock(
        side_effect=[
            httpx.Response(
                400,
                json={
                    "error": {
                        "type": "invalid_request_error",
                        "code": "charge_already_refunded",
                        "message": "Charge ch_1 has already been refunded.",
                    }
                },
            ),
            httpx.Response(
                200,
                json={
                    "id": "re_2",
                    "object": "refund",
                    "status": "failed",
                    "failure_reason": "expired_or_canceled_card",
                },
            ),
            httpx.ConnectError("down"),
        ]
    )
    g = gateway()
    refused, failed, unreachable = [
        await g.refund(reference="pi_123", amount=500, currency="USD", idempotency_key=f"r{i}")
        for i in range(3)
    ]
    assert refused == RefundResult(False, "Charge ch_1 has already been refunded.")
    assert not failed.ok and "expired or canceled card" in failed.message
    assert not unreachable.ok


def test_amounts_follow_stripes_minor_units() -> None:
    assert to_stripe_amount(1999, "USD") == 1999
    assert to_stripe_amount(500, "JPY") == 500
    assert to_stripe_amount(5, "ISK") == 500  # zero-decimal in ISO 4217, two in Stripe's API
    assert from_stripe_amount(500, "isk") == 5
    assert to_stripe_amount(5120, "KWD") == 5120
    assert to_stripe_amount(5125, "KWD") is None  # Stripe wants a trailing 0 here
    assert to_stripe_amount(12345, "MGA") is None  # two decimals in ISO, none in Stripe


# --------------------------------------------------------------------------- checkout


async def ready_checkout(gql: GraphQL) -> str:
    """A guest checkout with one in-stock variant, a US address and Standard shipping."""
    body = await gql(
        "{ products(first: 1, filter: {inStock: true}) "
        "{ nodes { variants { id quantityAvailable } } } }"
    )
    [product] = body["data"]["products"]["nodes"]
    variant = next(v for v in product["variants"] if v["quantityAvailable"] > 0)
    body = await gql(
        f"""mutation($input: CheckoutCreateInput!) {{
              checkoutCreate(input: $input) {{ checkout {{ id }} {ERRORS} }} }}""",
        {
            "input": {
                "lines": [{"variantId": variant["id"], "quantity": 1}],
                "email": "ann@example.com",
            }
        },
    )
    assert body["data"]["checkoutCreate"]["errors"] == []
    checkout_id: str = body["data"]["checkoutCreate"]["checkout"]["id"]
    body = await gql(
        f"""mutation($id: ID!, $address: AddressInput!) {{
              checkoutShippingAddressUpdate(checkoutId: $id, address: $address) {{
                {ERRORS} }} }}""",
        {"id": checkout_id, "address": ADDRESS},
    )
    assert body["data"]["checkoutShippingAddressUpdate"]["errors"] == []
    methods = (await gql("{ shippingMethods { id name } }"))["data"]["shippingMethods"]
    standard = next(m["id"] for m in methods if m["name"] == "Standard")
    body = await gql(
        f"""mutation($id: ID!, $method: ID!) {{
              checkoutShippingMethodUpdate(checkoutId: $id, shippingMethodId: $method) {{
                checkout {{ total {{ amount }} }} {ERRORS} }} }}""",
        {"id": checkout_id, "method": standard},
    )
    assert body["data"]["checkoutShippingMethodUpdate"]["errors"] == []
    return checkout_id


async def complete(
    gql: GraphQL, checkout_id: str, key: str, token: str = "pm_card_visa"
) -> dict[str, Any]:
    body = await gql(COMPLETE, {"id": checkout_id, "token": token, "key": key})
    payload: dict[str, Any] = body["data"]["checkoutComplete"]
    return payload


def cents(amount: str) -> int:
    return int(Decimal(amount) * 100)


@pytest.fixture
async def shop(fresh_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app with Stripe charges and the Stripe webhook on."""
    async with make_client(
        fresh_db, stripe_secret_key=API_KEY, stripe_webhook_secret=WEBHOOK_SECRET
    ) as client:
        yield client


async def test_checkout_complete_charges_through_stripe(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter
) -> None:
    route = stripe_api.post("/payment_intents").respond(200, json=intent("pi_e2e"))
    gql = graphql_caller(shop)
    checkout_id = await ready_checkout(gql)

    payload = await complete(gql, checkout_id, "order-key-1")

    assert payload["errors"] == []
    order = payload["order"]
    assert order["paymentStatus"] == "PAID"
    [payment] = order["payments"]
    assert payment["gateway"] == "stripe"
    assert payment["status"] == "PAID"
    assert payment["pspReference"] == "pi_e2e"
    request = route.calls.last.request
    assert request.headers["idempotency-key"] == "order-key-1"
    sent = form(request)
    assert sent["amount"] == str(cents(order["total"]["amount"]))
    assert sent["currency"] == order["total"]["currency"].lower()
    assert sent["payment_method"] == "pm_card_visa"

    # The same key again: the same order, and Stripe is not asked again.
    again = await complete(gql, checkout_id, "order-key-1")
    assert again["order"]["id"] == order["id"]
    assert route.call_count == 1


async def test_checkout_declined_by_stripe_stays_open(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter, fresh_db: Database
) -> None:
    stripe_api.post("/payment_intents").mock(return_value=card_error("Your card was declined."))
    gql = graphql_caller(shop)
    checkout_id = await ready_checkout(gql)

    payload = await complete(gql, checkout_id, "order-key-2")

    assert payload["order"] is None
    assert [(e["code"], e["message"]) for e in payload["errors"]] == [
        ("PAYMENT_DECLINED", "Your card was declined.")
    ]
    assert await payment_rows(fresh_db) == [("stripe", "FAILED", "pi_declined", 0, None)]


async def test_unreachable_stripe_leaves_the_attempt_to_resume(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter, fresh_db: Database
) -> None:
    route = stripe_api.post("/payment_intents").mock(
        side_effect=[httpx.ConnectError("down")] * 3 + [httpx.Response(200, json=intent("pi_r"))]
    )
    gql = graphql_caller(shop)
    checkout_id = await ready_checkout(gql)

    first = await complete(gql, checkout_id, "order-key-3")
    assert [e["code"] for e in first["errors"]] == ["PAYMENT_ERROR"]
    assert await payment_rows(fresh_db) == [("stripe", "PENDING", None, 0, None)]

    second = await complete(gql, checkout_id, "order-key-3")
    assert second["errors"] == []
    assert second["order"]["payments"][0]["pspReference"] == "pi_r"
    assert {c.request.headers["idempotency-key"] for c in route.calls} == {"order-key-3"}


# --------------------------------------------------------------------------- webhooks


def signature(payload: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(kind: str, obj: dict[str, Any], event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "api_version": "2026-10-28.endive",
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()


def refunded(intent_id: str, amount: int, refunded_amount: int) -> bytes:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": intent_id,
        "amount": amount,
        "amount_refunded": refunded_amount,
        "currency": "usd",
        "refunded": refunded_amount == amount,
    }
    return event("charge.refunded", charge, f"evt_refund_{refunded_amount}")


async def deliver(client: httpx.AsyncClient, payload: bytes, **headers: str) -> httpx.Response:
    if "stripe_signature" not in headers:
        headers["stripe_signature"] = signature(payload)
    sent = {k.replace("_", "-"): v for k, v in headers.items() if v}
    return await client.post(
        "/webhooks/stripe",
        content=payload,
        headers={"content-type": "application/json", **sent},
    )


async def payment_rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(
                payments.c.gateway,
                payments.c.status,
                payments.c.psp_reference,
                payments.c.refunded_amount,
                orders.c.payment_status,
            )
            .select_from(payments.outerjoin(orders, orders.c.id == payments.c.order_id))
            .order_by(payments.c.id)
        )
        return [tuple(row) for row in rows]


async def paid_order(shop: httpx.AsyncClient, stripe_api: respx.MockRouter, intent_id: str) -> int:
    """Place a Stripe-paid order; its total in cents."""
    stripe_api.post("/payment_intents").respond(200, json=intent(intent_id))
    gql = graphql_caller(shop)
    payload = await complete(gql, await ready_checkout(gql), f"key-{intent_id}")
    assert payload["errors"] == []
    return cents(payload["order"]["total"]["amount"])


async def test_refund_webhooks_update_payment_and_order(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter, fresh_db: Database
) -> None:
    total = await paid_order(shop, stripe_api, "pi_paid")
    assert await payment_rows(fresh_db) == [("stripe", "PAID", "pi_paid", 0, "PAID")]

    partial = refunded("pi_paid", total, 300)
    for _ in range(2):  # Stripe delivers at least once: the replay changes nothing
        response = await deliver(shop, partial)
        assert response.status_code == 200, response.text
        assert await payment_rows(fresh_db) == [
            ("stripe", "PARTIALLY_REFUNDED", "pi_paid", 300, "PARTIALLY_REFUNDED")
        ]

    assert (await deliver(shop, refunded("pi_paid", total, total))).status_code == 200
    full = [("stripe", "REFUNDED", "pi_paid", total, "REFUNDED")]
    assert await payment_rows(fresh_db) == full

    # A late delivery of the older, partial event does not undo the full refund.
    assert (await deliver(shop, partial)).status_code == 200
    assert await payment_rows(fresh_db) == full


async def test_failure_webhook_never_unpays_a_paid_payment(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter, fresh_db: Database
) -> None:
    await paid_order(shop, stripe_api, "pi_paid")
    before = await payment_rows(fresh_db)
    for kind in ("payment_intent.payment_failed", "payment_intent.succeeded"):
        payload = event(kind, intent("pi_paid", "requires_payment_method"))
        assert (await deliver(shop, payload)).status_code == 200
    assert await payment_rows(fresh_db) == before


@pytest.mark.parametrize(
    ("kind", "status"),
    [("payment_intent.succeeded", "PAID"), ("payment_intent.payment_failed", "FAILED")],
)
async def test_intent_webhooks_settle_a_payment_whose_charge_answer_was_lost(
    shop: httpx.AsyncClient,
    stripe_api: respx.MockRouter,
    fresh_db: Database,
    kind: str,
    status: str,
) -> None:
    stripe_api.post("/payment_intents").mock(side_effect=httpx.ConnectError("down"))
    gql = graphql_caller(shop)
    checkout_id = await ready_checkout(gql)
    lost = await complete(gql, checkout_id, "lost-key")
    assert [e["code"] for e in lost["errors"]] == ["PAYMENT_ERROR"]
    assert await payment_rows(fresh_db) == [("stripe", "PENDING", None, 0, None)]

    metadata = {"shopql_idempotency_key": "lost-key"}
    payload = event(kind, intent("pi_lost", "succeeded", metadata=metadata))
    assert (await deliver(shop, payload)).status_code == 200
    assert await payment_rows(fresh_db) == [("stripe", status, "pi_lost", 0, None)]


async def test_unknown_events_and_intents_are_acknowledged_without_changes(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter, fresh_db: Database
) -> None:
    await paid_order(shop, stripe_api, "pi_paid")
    before = await payment_rows(fresh_db)
    for payload in (
        event("customer.created", {"id": "cus_1", "object": "customer"}),
        event("payment_intent.succeeded", intent("pi_someone_else")),
        event("payment_intent.payment_failed", intent("pi_someone_else", "canceled")),
        refunded("pi_someone_else", 1000, 1000),
        event("charge.refunded", {"id": "ch_1", "object": "charge"}),
    ):
        response = await deliver(shop, payload)
        assert response.status_code == 200, response.text
    assert await payment_rows(fresh_db) == before


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "tampered-body", "unsigned", "too-old", "garbage-header", "not-utf8"],
)
async def test_webhooks_without_a_valid_signature_are_rejected(
    shop: httpx.AsyncClient, stripe_api: respx.MockRouter, fresh_db: Database, tamper: str
) -> None:
    total = await paid_order(shop, stripe_api, "pi_paid")
    before = await payment_rows(fresh_db)
    payload = refunded("pi_paid", total, total)
    header = signature(payload)
    if tamper == "wrong-secret":
        header = signature(payload, secret="whsec_someone_else")
    elif tamper == "tampered-body":
        header = signature(refunded("pi_paid", total, 100))
    elif tamper == "unsigned":
        header = ""
    elif tamper == "too-old":
        header = signature(payload, at=int(time.time()) - 3600)
    elif tamper == "garbage-header":
        header = "t=abc,v1=xyz"
    elif tamper == "not-utf8":
        payload = b"\xff\xfe" + payload
        header = signature(payload)

    response = await deliver(shop, payload, stripe_signature=header)

    assert response.status_code == 400
    assert await payment_rows(fresh_db) == before


async def test_webhook_route_needs_the_secret(catalog_db: Database) -> None:
    payload = event("customer.created", {"id": "cus_1"})
    async with make_client(catalog_db) as client:
        assert (await deliver(client, payload)).status_code == 404
    async with make_client(catalog_db, stripe_webhook_secret=WEBHOOK_SECRET) as client:
        assert (await client.get("/webhooks/stripe")).status_code == 405
        assert (await deliver(client, payload)).status_code == 200
