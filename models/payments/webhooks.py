"""Payment status pushed by the PSP: Stripe webhooks, verified, applied to payments and orders.

Statuses only move forward, whatever order events arrive in and however often they are
delivered (Stripe delivers at least once, and not in order):

- `payment_intent.succeeded`: PENDING -> PAID;
- `payment_intent.payment_failed`: PENDING -> FAILED (never a paid payment);
- `charge.refunded`: Stripe's cumulative refunded amount, if larger than ours, with
  PARTIALLY_REFUNDED or REFUNDED. A replayed or older event changes nothing.

The order's `payment_status` follows its payment. The write functions are keyword-only,
run on the caller's connection, and never commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.db import Database, utcnow
from models.orders.tables import orders
from models.payments.stripe_gateway import METADATA_KEY, from_stripe_amount
from models.payments.tables import payments

logger = logging.getLogger("shopql.payments.webhooks")

SIGNATURE_TOLERANCE = 300  # seconds; Stripe's default, older signatures are replays
MAX_BODY_BYTES = 1024 * 1024

_REFUNDABLE = ("PAID", "PARTIALLY_REFUNDED", "REFUNDED")


@dataclass(frozen=True, slots=True)
class PaymentChange:
    payment_id: int
    order_id: int | None
    status: str
    refunded_amount: int


# --------------------------------------------------------------------------- data layer


async def _locked_payment(
    conn: AsyncConnection, *, gateway: str, psp_reference: str, idempotency_key: str | None
) -> Any:
    """The payment a PSP reference (or, before its outcome was recorded, the idempotency key
    the charge was made with) names, locked after its order so the lock order is the same
    as a refund's; None when there is no such payment."""
    columns = (payments.c.id, payments.c.order_id)
    row = (
        await conn.execute(
            sa.select(*columns).where(
                payments.c.gateway == gateway, payments.c.psp_reference == psp_reference
            )
        )
    ).first()
    if row is None and idempotency_key:
        row = (
            await conn.execute(
                sa.select(*columns).where(
                    payments.c.gateway == gateway,
                    payments.c.psp_reference.is_(None),
                    payments.c.idempotency_key == idempotency_key,
                )
            )
        ).first()
    if row is None:
        return None
    if row.order_id is not None:
        await conn.execute(
            sa.select(orders.c.id).where(orders.c.id == row.order_id).with_for_update()
        )
    return (
        await conn.execute(
            sa.select(
                payments.c.id,
                payments.c.order_id,
                payments.c.status,
                payments.c.amount,
                payments.c.refunded_amount,
                payments.c.currency,
                payments.c.psp_reference,
            )
            .where(payments.c.id == row.id)
            .with_for_update()
        )
    ).one()


async def _write(
    conn: AsyncConnection,
    payment: Any,
    *,
    status: str,
    refunded_amount: int,
    psp_reference: str,
) -> PaymentChange:
    now = utcnow()
    await conn.execute(
        payments.update()
        .where(payments.c.id == payment.id)
        .values(
            status=status,
            refunded_amount=refunded_amount,
            psp_reference=psp_reference,
            updated_at=now,
        )
    )
    if payment.order_id is not None:
        await conn.execute(
            orders.update()
            .where(orders.c.id == payment.order_id)
            .values(payment_status=status, updated_at=now)
        )
    return PaymentChange(payment.id, payment.order_id, status, refunded_amount)


async def record_payment_succeeded(
    conn: AsyncConnection, *, gateway: str, psp_reference: str, idempotency_key: str | None = None
) -> PaymentChange | None:
    """PENDING -> PAID; None when nothing changed."""
    payment = await _locked_payment(
        conn, gateway=gateway, psp_reference=psp_reference, idempotency_key=idempotency_key
    )
    if payment is None or payment.status != "PENDING":
        if payment is not None and payment.status == "FAILED":
            logger.error(
                "%s reports payment %s (%s) succeeded, but its checkout failed: refund it",
                gateway,
                payment.id,
                psp_reference,
            )
        return None
    return await _write(
        conn,
        payment,
        status="PAID",
        refunded_amount=payment.refunded_amount,
        psp_reference=psp_reference,
    )


async def record_payment_failed(
    conn: AsyncConnection, *, gateway: str, psp_reference: str, idempotency_key: str | None = None
) -> PaymentChange | None:
    """PENDING -> FAILED; None when nothing changed (a paid payment stays paid)."""
    payment = await _locked_payment(
        conn, gateway=gateway, psp_reference=psp_reference, idempotency_key=idempotency_key
    )
    if payment is None or payment.status != "PENDING":
        return None
    return await _write(
        conn,
        payment,
        status="FAILED",
        refunded_amount=payment.refunded_amount,
        psp_reference=psp_reference,
    )


async def record_refunded_total(
    conn: AsyncConnection,
    *,
    gateway: str,
    psp_reference: str,
    refunded_amount: int,
    currency: str,
) -> PaymentChange | None:
    """Raise a paid payment's refunded amount to the PSP's cumulative total (minor units);
    None when nothing changed (a replayed or out-of-date event)."""
    payment = await _locked_payment(
        conn, gateway=gateway, psp_reference=psp_reference, idempotency_key=None
    )
    if payment is None or payment.status not in _REFUNDABLE:
        return None
    if currency.upper() != payment.currency:
        logger.error(
            "%s refund for payment %s is in %s, the payment in %s: ignored",
            gateway,
            payment.id,
            currency,
            payment.currency,
        )
        return None
    total = min(max(refunded_amount, payment.refunded_amount), payment.amount)
    if total == payment.refunded_amount:
        return None
    status = "REFUNDED" if total == payment.amount else "PARTIALLY_REFUNDED"
    return await _write(
        conn, payment, status=status, refunded_amount=total, psp_reference=psp_reference
    )


# --------------------------------------------------------------------------- Stripe events

HANDLED_EVENTS = frozenset(
    {"payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded"}
)


async def apply_stripe_event(
    conn: AsyncConnection, *, event: Mapping[str, Any]
) -> PaymentChange | None:
    """Apply one verified Stripe event; None when it changes nothing here."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        return None
    kind = event.get("type")
    if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        intent_id = obj.get("id")
        if not isinstance(intent_id, str):
            return None
        metadata = obj.get("metadata")
        key = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
        record = (
            record_payment_succeeded
            if kind == "payment_intent.succeeded"
            else record_payment_failed
        )
        return await record(
            conn,
            gateway="stripe",
            psp_reference=intent_id,
            idempotency_key=key if isinstance(key, str) else None,
        )
    if kind == "charge.refunded":
        intent_id = obj.get("payment_intent")
        refunded = obj.get("amount_refunded")
        currency = obj.get("currency")
        if not (
            isinstance(intent_id, str) and isinstance(refunded, int) and isinstance(currency, str)
        ):
            return None
        return await record_refunded_total(
            conn,
            gateway="stripe",
            psp_reference=intent_id,
            refunded_amount=from_stripe_amount(refunded, currency),
            currency=currency,
        )
    return None


async def _read_body(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _reject(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def stripe_webhook(
    db: Database, *, secret: str, tolerance: int = SIGNATURE_TOLERANCE
) -> Callable[[Request], Awaitable[Response]]:
    """The `POST /webhooks/stripe` endpoint: 400 for anything not signed with `secret` in
    the last `tolerance` seconds; 200 for every verified event, applied or not (an event
    about something this shop does not know is acknowledged so Stripe stops sending it);
    500 when the database fails, so Stripe delivers it again."""

    async def endpoint(request: Request) -> Response:
        body = await _read_body(request, MAX_BODY_BYTES)
        if body is None:
            return _reject(413, "payload too large")
        try:
            stripe.WebhookSignature.verify_header(
                body, request.headers.get("stripe-signature"), secret, tolerance
            )
        except (stripe.SignatureVerificationError, ValueError) as exc:
            logger.warning("rejected a Stripe webhook: %s", exc)
            return _reject(400, "invalid signature")
        try:
            event = json.loads(body)
        except ValueError:
            return _reject(400, "invalid payload")
        if not isinstance(event, dict):
            return _reject(400, "invalid payload")
        kind = event.get("type")
        if kind in HANDLED_EVENTS:
            async with db.transaction() as conn:
                change = await apply_stripe_event(conn, event=event)
            if change is not None:
                logger.info(
                    "Stripe event %s (%s): payment %s is %s",
                    event.get("id"),
                    kind,
                    change.payment_id,
                    change.status,
                )
        return JSONResponse({"received": True})

    return endpoint
