"""checkoutComplete: a checkout becomes a paid order exactly once.

Three steps, each safe to crash after:

1. one transaction: validate, move the checkout OPEN -> COMPLETING, take the stock (one
   conditional statement) and the promo code's use, record a PENDING payment and the
   attempt with a snapshot of what is bought, keyed by the idempotency key. Any refusal
   rolls all of it back.
2. the charge, through a gateway that is idempotent by that same key;
3. one transaction: the attempt moves RESERVED -> COMPLETED (or FAILED) with one
   conditional update, so exactly one caller writes the order (or gives the stock and the
   promo use back); concurrent callers with the same key find it settled.

A retry with the same key resumes wherever the first call stopped; another key on a
completed checkout is refused; `recover_stale` settles attempts nobody retried.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from models import telemetry
from models.checkout import pricing
from models.checkout import queries as q
from models.checkout.queries import CheckoutRecord
from models.db import Database, utcnow
from models.errors import InvalidInput, Problem
from models.orders import queries as oq
from models.orders.queries import OrderRecord
from models.payments.gateways import ChargeResult, Gateway
from resolvers import ids
from resolvers.checkout.cart import check_variants, country_of, customer_keys, fail, promo_problem
from resolvers.context import Context

logger = logging.getLogger("shopql.checkout")

MAX_KEY_LENGTH = 255


@dataclass
class CompleteResult:
    order: OrderRecord | None = None
    errors: list[Problem] = field(default_factory=list)


class PaymentInput(Protocol):
    @property
    def gateway(self) -> str: ...
    @property
    def token(self) -> str: ...


class _Refused(Exception):
    """Step 1 cannot go on: roll its transaction back and answer these problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("checkout completion refused")
        self.problems = problems


class _AlreadySettled(Exception):
    """Another call settled the attempt first: roll this transaction back."""


def _fingerprint(checkout_id: int, payment: PaymentInput) -> str:
    raw = f"{checkout_id}\x00{payment.gateway}\x00{payment.token}"
    return hashlib.sha256(raw.encode()).hexdigest()


@telemetry.checkout_outcome
async def checkout_complete(
    ctx: Context, gid: str, payment: PaymentInput, key: str
) -> CompleteResult:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        return CompleteResult(
            errors=fail(
                "INVALID", "idempotencyKey must be 1-255 printable characters", "idempotencyKey"
            )
        )
    gateway = ctx.services.gateways.get(payment.gateway)
    if gateway is None:
        return CompleteResult(
            errors=fail(
                "INVALID", f"unknown payment gateway {payment.gateway[:40]!r}", "payment.gateway"
            )
        )
    try:
        token = ids.decode_token(gid, "Checkout", field="checkoutId")
    except InvalidInput as exc:
        return CompleteResult(errors=fail("INVALID", exc.message, "checkoutId"))
    viewer_id = ctx.viewer.id if ctx.viewer else None
    try:
        async with ctx.db.transaction() as conn:
            await q.lock_key(conn, key=key)
            checkout = await q.checkout_for_update(conn, token=token, viewer_id=viewer_id)
            if checkout is None:
                raise _Refused(fail("NOT_FOUND", "no such checkout", "checkoutId"))
            attempt = await q.attempt_by_key(conn, key=key)
            if attempt is None:
                attempt = await _reserve(ctx, conn, checkout, payment, key)
            elif attempt.fingerprint != _fingerprint(checkout.id, payment):
                raise _Refused(
                    fail(
                        "IDEMPOTENCY_KEY_REUSED",
                        "this idempotency key was used for another checkout or payment",
                        "idempotencyKey",
                    )
                )
    except _Refused as refused:
        return CompleteResult(errors=refused.problems)
    if attempt.state != "RESERVED":
        return await _outcome(ctx, attempt)
    return await resume(ctx, key, payment.token)


async def _reserve(
    ctx: Context, conn: Any, checkout: CheckoutRecord, payment: PaymentInput, key: str
) -> q.AttemptRecord:
    """Step 1: validate, take the stock and the promo use, record payment and attempt."""
    if checkout.status == "COMPLETED":
        raise _Refused(
            fail("CHECKOUT_COMPLETED", "this checkout is completed already", "checkoutId")
        )
    if checkout.status == "COMPLETING":
        raise _Refused(
            fail(
                "CHECKOUT_IN_PROGRESS",
                "this checkout is being completed with another idempotency key",
                "checkoutId",
            )
        )
    gateway = ctx.services.gateways[payment.gateway]
    if not gateway.accepts(payment.token):
        raise _Refused(
            fail("INVALID", "the payment token is not valid for this gateway", "payment.token")
        )
    lines = (await q.lines_by_checkout_ids(conn, checkout_ids=[checkout.id])).get(checkout.id, [])
    problems: list[Problem] = []
    if not lines:
        problems += fail("REQUIRED", "the checkout has no lines", "lines")
    if not checkout.email:
        problems += fail("REQUIRED", "the checkout needs an email", "email")
    if checkout.shipping_address_id is None:
        problems += fail("REQUIRED", "the checkout needs a shipping address", "shippingAddress")
    if checkout.shipping_method_id is None:
        problems += fail("REQUIRED", "the checkout needs a shipping method", "shippingMethod")
    if problems:
        raise _Refused(problems)
    wanted = {line.variant_id: line.quantity for line in lines}
    problems = await check_variants(conn, wanted, "lines")
    if problems:
        raise _Refused(problems)
    info = await q.variant_info(conn, variant_ids=list(wanted))
    assert checkout.shipping_method_id is not None and checkout.shipping_address_id is not None
    method = (await q.shipping_methods_by_ids(conn, ids=[checkout.shipping_method_id])).get(
        checkout.shipping_method_id
    )
    if method is None or not method.serves(await country_of(conn, checkout.shipping_address_id)):
        raise _Refused(
            fail(
                "SHIPPING_METHOD_NOT_AVAILABLE",
                "the shipping method does not ship there",
                "shippingMethod",
            )
        )
    promo = None
    if checkout.promo_code:
        promo = (await q.promos_by_codes(conn, codes=[checkout.promo_code])).get(
            checkout.promo_code
        )
        subtotal = sum(qty * info[v].price_amount for v, qty in wanted.items())
        refused = await promo_problem(conn, checkout, promo, subtotal)
        if refused:
            raise _Refused(refused)
    totals = pricing.totals(
        lines=[(qty, info[v].price_amount) for v, qty in wanted.items()],
        currency=checkout.currency,
        method=method,
        promo=promo,
        now=utcnow(),
    )
    if not await q.take_stock(conn, quantities=wanted):
        # Someone bought the last units since the check above; the rollback undoes the
        # rows this statement did take.
        raise _Refused(
            fail("INSUFFICIENT_STOCK", "not enough stock left for this checkout", "lines")
        )
    if promo is not None:
        taken = await q.reserve_promo(
            conn, promo=promo, customer_keys=customer_keys(checkout), attempt_key=key
        )
        if taken is not None:
            message = (
                "you have used this code already"
                if taken == "PROMO_CODE_ALREADY_USED"
                else "this promo code has been used up"
            )
            raise _Refused(fail(taken, message, "promoCode"))
    await q.update_checkout(conn, checkout_id=checkout.id, status="COMPLETING", completion_key=key)
    payment_id = await oq.create_payment(
        conn,
        checkout_id=checkout.id,
        gateway=payment.gateway,
        amount=totals.total,
        currency=totals.currency,
        idempotency_key=key,
    )
    snapshot = {
        "user_id": checkout.user_id,
        "email": checkout.email,
        "currency": totals.currency,
        "subtotal": totals.subtotal,
        "shipping": totals.shipping,
        "discount": totals.discount,
        "total": totals.total,
        "address_id": checkout.shipping_address_id,
        "method_name": method.name,
        "promo_code": promo.code if promo is not None else None,
        "gateway": payment.gateway,
        "lines": [
            {
                "variant_id": v,
                "product_name": info[v].product_name,
                "variant_name": info[v].name,
                "sku": info[v].sku,
                "quantity": qty,
                "unit_amount": info[v].price_amount,
            }
            for v, qty in wanted.items()
        ],
    }
    await q.record_attempt(
        conn,
        key=key,
        checkout_id=checkout.id,
        fingerprint=_fingerprint(checkout.id, payment),
        snapshot=snapshot,
        payment_id=payment_id,
    )
    attempt = await q.attempt_by_key(conn, key=key)
    assert attempt is not None
    return attempt


async def resume(ctx: Context, key: str, payment_token: str) -> CompleteResult:
    """Steps 2 and 3 for a RESERVED attempt: charge (idempotently) and settle."""
    async with ctx.db.read() as conn:
        attempt = await q.attempt_by_key(conn, key=key)
    assert attempt is not None
    if attempt.state != "RESERVED":
        return await _outcome(ctx, attempt)
    snap = attempt.snapshot
    gateway = ctx.services.gateways[snap["gateway"]]
    charge = await gateway.charge(
        amount=snap["total"], currency=snap["currency"], token=payment_token, idempotency_key=key
    )
    if charge.outcome == "error":
        return CompleteResult(
            errors=fail(
                "PAYMENT_ERROR",
                "the payment provider could not be reached; retry with the same idempotency key",
            )
        )
    await settle(ctx.db, attempt, charge)
    async with ctx.db.read() as conn:
        final = await q.attempt_by_key(conn, key=key)
    assert final is not None
    return await _outcome(ctx, final)


async def settle(db: Database, attempt: q.AttemptRecord, charge: ChargeResult) -> None:
    """Step 3. Exactly one caller wins the attempt's conditional update; a concurrent
    caller with the same key rolls back and reads the winner's outcome."""
    try:
        async with db.transaction() as conn:
            if charge.outcome == "succeeded":
                await _complete(conn, attempt, charge)
            else:
                await _release(conn, attempt, charge)
    except _AlreadySettled:
        pass


async def _complete(conn: Any, attempt: q.AttemptRecord, charge: ChargeResult) -> None:
    key = attempt.idempotency_key
    if not await q.finish_attempt(conn, key=key, state="COMPLETED"):
        raise _AlreadySettled
    snap = attempt.snapshot
    address_id = (
        await oq.copy_address(conn, address_id=snap["address_id"])
        if snap["address_id"] is not None
        else None
    )
    order_id = await oq.create_order(
        conn,
        checkout_id=attempt.checkout_id,
        user_id=snap["user_id"],
        email=snap["email"],
        currency=snap["currency"],
        subtotal=snap["subtotal"],
        shipping=snap["shipping"],
        discount=snap["discount"],
        shipping_address_id=address_id,
        shipping_method_name=snap["method_name"],
        promo_code=snap["promo_code"],
        lines=snap["lines"],
    )
    await q.set_attempt_order(conn, key=key, order_id=order_id)
    assert attempt.payment_id is not None
    await oq.settle_payment(
        conn,
        payment_id=attempt.payment_id,
        status="PAID",
        psp_reference=charge.reference,
        order_id=order_id,
    )
    await q.update_checkout(conn, checkout_id=attempt.checkout_id, status="COMPLETED")
    if snap["promo_code"] is not None:
        await q.settle_promo(conn, attempt_key=key, order_id=order_id)
    logger.info("order %s created from checkout %s", order_id, attempt.checkout_id)


async def _release(conn: Any, attempt: q.AttemptRecord, charge: ChargeResult) -> None:
    code = "PAYMENT_DECLINED" if charge.outcome == "declined" else "INVALID"
    if not await q.finish_attempt(
        conn,
        key=attempt.idempotency_key,
        state="FAILED",
        error_code=code,
        error_message=charge.message[:300] or "the payment was declined",
    ):
        raise _AlreadySettled
    lines = attempt.snapshot["lines"]
    await q.return_stock(conn, quantities={line["variant_id"]: line["quantity"] for line in lines})
    await q.release_promo(conn, attempt_key=attempt.idempotency_key)
    assert attempt.payment_id is not None
    await oq.settle_payment(
        conn, payment_id=attempt.payment_id, status="FAILED", psp_reference=charge.reference
    )
    await q.update_checkout(
        conn, checkout_id=attempt.checkout_id, status="OPEN", completion_key=None
    )


async def recover_stale(
    db: Database, gateways: Mapping[str, Gateway], *, older_than: timedelta
) -> dict[str, int]:
    """Settle completions abandoned between reserving and settling (the client never
    retried). The gateway is first asked to make the key's outcome final (`void`: a
    charge not made by now can never be made with that key), so a late retry racing this
    cannot charge after the stock was released. Completed when the final outcome is a
    charge, otherwise released (stock back, checkout open). `shopql recover-checkouts`."""
    async with db.read() as conn:
        stale = await q.stale_attempts(conn, older_than=utcnow() - older_than)
    counts = {"completed": 0, "released": 0, "skipped": 0}
    for attempt in stale:
        gateway = gateways.get(attempt.snapshot["gateway"])
        void = getattr(gateway, "void", None)
        if void is None:
            counts["skipped"] += 1
            logger.warning("cannot recover attempt on gateway %s", attempt.snapshot["gateway"])
            continue
        charge = await void(attempt.idempotency_key)
        if charge.outcome != "succeeded":
            charge = ChargeResult("declined", None, "abandoned before the payment completed")
        await settle(db, attempt, charge)
        counts["completed" if charge.outcome == "succeeded" else "released"] += 1
    return counts


async def _outcome(ctx: Context, attempt: q.AttemptRecord) -> CompleteResult:
    if attempt.state == "COMPLETED":
        assert attempt.order_id is not None
        async with ctx.db.read() as conn:
            found = await oq.orders_by_ids(
                conn, ids=[attempt.order_id], owner_id=None, all_orders=True
            )
        return CompleteResult(order=found.get(attempt.order_id))
    return CompleteResult(
        errors=fail(attempt.error_code or "PAYMENT_DECLINED", attempt.error_message or "declined")
    )
