"""Order, discount and shipping administration: orderFulfill / orderCancel / orderRefund
(MANAGE_ORDERS), promo codes (MANAGE_DISCOUNTS), shipping methods (MANAGE_SHIPPING).

Every resolver gates on its permission first, validates all input into `Problem`s before
it writes, and makes its change, the audit entry and its domain events in one
transaction (a problem found inside it raises `_Abort`, which rolls everything back).

Fulfilling locks the order row, checks what is left on each line, and moves the lines'
fulfilled counts with one conditional UPDATE whose row count must match (the
`quantity_fulfilled <= quantity` CHECK backs it), so concurrent fulfillments of one
order can never ship more than was bought.

Refunds are three steps (see models/orders/admin.py):
1. one transaction reserves the amount on the payment (compare-and-set on
   `refunded_amount`, under the order lock) and records a PENDING refund with a fresh
   idempotency key, so concurrent refunds can never together exceed what was paid;
2. the gateway is asked to refund with that key;
3. one transaction settles the refund: SUCCEEDED (audit entry, events), or FAILED with
   the reservation given back (nothing changed; PAYMENT_ERROR).
A crash between 1 and 3 leaves a PENDING refund holding its reservation (never an
over-refund); `recover_refunds` asks the gateway again with the same key and settles it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from models.audit.queries import record_audit
from models.checkout import admin as ca
from models.checkout import queries as cq
from models.checkout.admin import PromoCodeFilter, PromoCodeRecord
from models.checkout.pricing import ShippingMethodRecord
from models.countries import COUNTRY_CODES
from models.db import Database, utcnow
from models.errors import InvalidInput, Problem
from models.events import (
    ORDER_UPDATED,
    PAYMENT_CHANGED,
    VARIANT_STOCK_CHANGED,
    record_event,
)
from models.money import money
from models.orders import admin as oa
from models.orders import queries as oq
from models.orders.admin import RefundRecord
from models.orders.queries import OrderRecord, PaymentRecord
from models.pagination import Page, PageArgs
from models.payments.gateways import Gateway, RefundResult
from resolvers.admin import Result, clean_text, decode_id, to_minor_units
from resolvers.context import Context

logger = logging.getLogger("shopql.orders_admin")

ORDERS = "MANAGE_ORDERS"
DISCOUNTS = "MANAGE_DISCOUNTS"
SHIPPING = "MANAGE_SHIPPING"
TRACKING_LIMIT = 255
MAX_FULFILL_LINES = 500
CODE_LIMIT = 40
CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]*$")
METHOD_NAME_LIMIT = 100
MAX_COUNTRIES = 250
MAX_SEARCH = 40


class _Abort(Exception):
    """Problems found inside a transaction: roll it back and report them."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems


def _abort(code: str, message: str, path: str | None = None) -> _Abort:
    return _Abort([Problem(code, message, path)])


def _amount(minor: int, currency: str) -> str:
    return f"{money(minor, currency).amount} {currency}"


async def _order(ctx: Context, order_id: int) -> OrderRecord | None:
    """The order as committed now; the request's loaders are dropped so the payload's
    fields (lines, payments, fulfillments, stock) read the new state."""
    for cached in ("commerce", "catalog"):
        ctx.__dict__.pop(cached, None)
    async with ctx.db.read() as conn:
        found = await oq.orders_by_ids(conn, ids=[order_id], owner_id=None, all_orders=True)
    return found.get(order_id)


# --------------------------------------------------------------------------- orderFulfill


class FulfillLineInput(Protocol):
    @property
    def order_line_id(self) -> str: ...
    @property
    def quantity(self) -> int: ...


def _fulfill_input(
    lines: Sequence[FulfillLineInput] | None, problems: list[Problem]
) -> list[tuple[int, int, int]] | None:
    """[(input index, order line id, quantity)], or None for "everything left"."""
    if lines is None:
        return None
    if not lines:
        problems.append(
            Problem("REQUIRED", "list at least one line, or pass null to fulfil all", "lines")
        )
        return []
    if len(lines) > MAX_FULFILL_LINES:
        problems.append(Problem("INVALID", f"at most {MAX_FULFILL_LINES} lines", "lines"))
        return []
    chosen: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for i, line in enumerate(lines):
        line_id = decode_id(line.order_line_id, "OrderLine", f"lines.{i}.orderLineId", problems)
        if line.quantity <= 0:
            problems.append(Problem("INVALID", "a quantity is at least 1", f"lines.{i}.quantity"))
        if line_id is None:
            continue
        if line_id in seen:
            problems.append(
                Problem("INVALID", "this line is listed twice", f"lines.{i}.orderLineId")
            )
            continue
        seen.add(line_id)
        chosen.append((i, line_id, line.quantity))
    return chosen


async def order_fulfill(
    ctx: Context,
    gid: str,
    lines: Sequence[FulfillLineInput] | None,
    tracking_number: str | None,
) -> Result[OrderRecord]:
    viewer = ctx.require_permission(ORDERS)
    problems: list[Problem] = []
    order_id = decode_id(gid, "Order", "id", problems)
    tracking = clean_text(tracking_number, "trackingNumber", problems, limit=TRACKING_LIMIT)
    chosen = _fulfill_input(lines, problems)
    if problems:
        return Result(None, problems)
    assert order_id is not None
    try:
        async with ctx.db.transaction() as conn:
            order = await oa.lock_order(conn, order_id=order_id)
            if order is None:
                raise _abort("NOT_FOUND", "no order has this ID", "id")
            if order.status in ("CANCELED", "FULFILLED"):
                raise _abort("INVALID_STATE", f"order is {order.status}", "id")
            current = {line.id: line for line in await oa.lines_of(conn, order_id=order_id)}
            if chosen is None:
                quantities = {
                    line.id: line.quantity - line.quantity_fulfilled
                    for line in current.values()
                    if line.quantity > line.quantity_fulfilled
                }
                if not quantities:
                    raise _abort("INVALID_STATE", "nothing is left to fulfil", "id")
            else:
                quantities = _checked_quantities(chosen, current)
            if not await oa.fulfill_lines(conn, order_id=order_id, quantities=quantities):
                raise _abort("CONFLICT", "the order changed meanwhile; read it again", "lines")
            await oa.create_fulfillment(
                conn, order_id=order_id, tracking_number=tracking or None, quantities=quantities
            )
            status = await oa.fulfillment_status(conn, order_id=order_id)
            await oa.set_order_status(conn, order_id=order_id, status=status)
            changed = [name for name, v in (("lines", lines), ("trackingNumber", tracking)) if v]
            await record_audit(
                conn,
                actor=viewer,
                action="orderFulfill",
                object_type="Order",
                object_key=order_id,
                changed=changed,
            )
            record_event(
                conn, ORDER_UPDATED, {"order_id": order_id, "fields": ["status", "fulfillments"]}
            )
    except _Abort as exc:
        return Result(None, exc.problems)
    logger.info("order %s fulfilled (%s) by user_id=%s", order_id, status, viewer.id)
    return Result(await _order(ctx, order_id))


def _checked_quantities(
    chosen: list[tuple[int, int, int]], current: Mapping[int, oq.OrderLineRecord]
) -> dict[int, int]:
    problems: list[Problem] = []
    quantities: dict[int, int] = {}
    for i, line_id, quantity in chosen:
        line = current.get(line_id)
        if line is None:
            problems.append(
                Problem("INVALID", "not a line of this order", f"lines.{i}.orderLineId")
            )
            continue
        left = line.quantity - line.quantity_fulfilled
        if quantity > left:
            problems.append(
                Problem(
                    "INVALID",
                    f"at most {left} left to fulfil on this line",
                    f"lines.{i}.quantity",
                )
            )
        quantities[line_id] = quantity
    if problems:
        raise _Abort(problems)
    return quantities


# --------------------------------------------------------------------------- refunds


def _gateway_for(ctx: Context, payment: PaymentRecord) -> Gateway:
    gateway = ctx.services.gateways.get(payment.gateway)
    if gateway is None or payment.psp_reference is None:
        raise _abort(
            "PAYMENT_ERROR",
            f"payments through {payment.gateway!r} cannot be refunded here right now",
        )
    return gateway


async def _ask_gateway(
    gateway: Gateway, refund: RefundRecord, reference: str
) -> RefundResult | None:
    """The gateway's answer; None when it failed without one (the outcome is unknown)."""
    try:
        return await gateway.refund(
            reference=reference,
            amount=refund.amount,
            currency=refund.currency,
            idempotency_key=refund.idempotency_key,
        )
    except Exception:
        logger.exception("refund %s: the gateway failed; it stays PENDING", refund.id)
        return None


async def _settle(
    db: Database,
    refund: RefundRecord,
    answer: RefundResult,
    *,
    audit: tuple[Any, str, list[str]] | None,
) -> bool:
    """Step 3; True when this call settled it as SUCCEEDED."""
    async with db.transaction() as conn:
        settled = await oa.settle_refund(
            conn, refund_id=refund.id, succeeded=answer.ok, message=answer.message
        )
        if settled is None or not answer.ok:
            return False
        _payment_events(conn, refund)
        if audit is not None and refund.order_id is not None:
            actor, action, changed = audit
            await record_audit(
                conn,
                actor=actor,
                action=action,
                object_type="Order",
                object_key=refund.order_id,
                changed=changed,
            )
    return True


def _payment_events(conn: AsyncConnection, refund: RefundRecord) -> None:
    record_event(
        conn, PAYMENT_CHANGED, {"payment_id": refund.payment_id, "order_id": refund.order_id}
    )
    if refund.order_id is not None:
        record_event(
            conn, ORDER_UPDATED, {"order_id": refund.order_id, "fields": ["paymentStatus"]}
        )


async def _refund(
    ctx: Context,
    gateway: Gateway,
    refund: RefundRecord,
    reference: str,
    *,
    audit: tuple[Any, str, list[str]] | None,
) -> list[Problem]:
    """Steps 2 and 3 for a reserved refund; the problems to report."""
    answer = await _ask_gateway(gateway, refund, reference)
    if answer is None:
        return [
            Problem(
                "PAYMENT_ERROR",
                "the payment provider did not answer; the refund is pending and will be "
                "retried with the same idempotency key",
            )
        ]
    await _settle(ctx.db, refund, answer, audit=audit)
    if not answer.ok:
        return [
            Problem("PAYMENT_ERROR", f"the payment provider refused the refund: {answer.message}")
        ]
    return []


async def order_refund(ctx: Context, gid: str, amount: Decimal | None) -> Result[OrderRecord]:
    viewer = ctx.require_permission(ORDERS)
    problems: list[Problem] = []
    order_id = decode_id(gid, "Order", "id", problems)
    if amount is not None and (not amount.is_finite() or amount <= 0):
        problems.append(Problem("INVALID", "a refund is a positive amount", "amount"))
    if problems:
        return Result(None, problems)
    assert order_id is not None
    try:
        async with ctx.db.transaction() as conn:
            order = await oa.lock_order(conn, order_id=order_id)
            if order is None:
                raise _abort("NOT_FOUND", "no order has this ID", "id")
            payment = await oa.refundable_payment(conn, order_id=order_id)
            if payment is None:
                raise _abort(
                    "INVALID_STATE",
                    f"payment is {order.payment_status}: nothing to refund",
                    "id",
                )
            left = payment.amount - payment.refunded_amount
            if amount is None:
                wanted = left
            else:
                found: list[Problem] = []
                converted = to_minor_units(amount, payment.currency, "amount", found)
                if found or converted is None:
                    raise _Abort(found)
                wanted = converted
            if wanted <= 0 or wanted > left:
                raise _abort(
                    "INVALID",
                    f"at most {_amount(left, payment.currency)} can be refunded",
                    "amount",
                )
            gateway = _gateway_for(ctx, payment)
            refund = await oa.reserve_refund(
                conn, payment=payment, amount=wanted, actor_id=viewer.id
            )
            if refund is None:  # unreachable under the order lock; kept as a guard
                raise _abort("CONFLICT", "the payment changed meanwhile; read it again", "amount")
    except _Abort as exc:
        return Result(None, exc.problems)
    assert payment.psp_reference is not None
    changed = ["amount"] if amount is not None else []
    problems = await _refund(
        ctx, gateway, refund, payment.psp_reference, audit=(viewer, "orderRefund", changed)
    )
    if problems:
        return Result(None, problems)
    logger.info("order %s refunded %s by user_id=%s", order_id, wanted, viewer.id)
    return Result(await _order(ctx, order_id))


async def recover_refunds(
    db: Database, gateways: Mapping[str, Gateway], *, older_than: timedelta
) -> dict[str, int]:
    """Settle refunds whose caller stopped between the reservation and the settlement
    (a crash, or a gateway that did not answer): ask the gateway again with the refund's
    own idempotency key (it refunds at most once per key) and settle the answer."""
    async with db.read() as conn:
        stale = await oa.pending_refunds(conn, older_than=utcnow() - older_than)
    counts = {"succeeded": 0, "failed": 0, "skipped": 0}
    for refund in stale:
        async with db.read() as conn:
            payment = await oa.payment_by_id(conn, payment_id=refund.payment_id)
        gateway = gateways.get(payment.gateway) if payment is not None else None
        if payment is None or gateway is None or payment.psp_reference is None:
            counts["skipped"] += 1
            continue
        answer = await _ask_gateway(gateway, refund, payment.psp_reference)
        if answer is None:
            counts["skipped"] += 1
            continue
        await _settle(db, refund, answer, audit=None)
        counts["succeeded" if answer.ok else "failed"] += 1
    return counts


# --------------------------------------------------------------------------- orderCancel


async def order_cancel(ctx: Context, gid: str) -> Result[OrderRecord]:
    """UNFULFILLED -> CANCELED: stock back, the paid amount refunded. The cancellation
    and the refund's reservation commit together; should the gateway then refuse, the
    order stays canceled, the reservation is given back, and the payload carries the
    order and a PAYMENT_ERROR (refund it later with orderRefund)."""
    viewer = ctx.require_permission(ORDERS)
    problems: list[Problem] = []
    order_id = decode_id(gid, "Order", "id", problems)
    if problems:
        return Result(None, problems)
    assert order_id is not None
    refund: RefundRecord | None = None
    try:
        async with ctx.db.transaction() as conn:
            order = await oa.lock_order(conn, order_id=order_id)
            if order is None:
                raise _abort("NOT_FOUND", "no order has this ID", "id")
            if order.status != "UNFULFILLED":
                raise _abort("INVALID_STATE", f"order is {order.status}", "id")
            payment = await oa.refundable_payment(conn, order_id=order_id)
            gateway = None
            if payment is not None and payment.refunded_amount < payment.amount:
                gateway = _gateway_for(ctx, payment)
            restock: dict[int, int] = {}
            for line in await oa.lines_of(conn, order_id=order_id):
                left = line.quantity - line.quantity_fulfilled
                if line.variant_id is not None and left > 0:
                    restock[line.variant_id] = restock.get(line.variant_id, 0) + left
            await cq.return_stock(conn, quantities=restock)
            await oa.set_order_status(conn, order_id=order_id, status="CANCELED")
            if payment is not None and gateway is not None:
                refund = await oa.reserve_refund(
                    conn,
                    payment=payment,
                    amount=payment.amount - payment.refunded_amount,
                    actor_id=viewer.id,
                )
            await record_audit(
                conn,
                actor=viewer,
                action="orderCancel",
                object_type="Order",
                object_key=order_id,
                changed=[],
            )
            record_event(conn, ORDER_UPDATED, {"order_id": order_id, "fields": ["status"]})
            if restock:
                record_event(conn, VARIANT_STOCK_CHANGED, {"variant_ids": sorted(restock)})
    except _Abort as exc:
        return Result(None, exc.problems)
    logger.info("order %s canceled by user_id=%s", order_id, viewer.id)
    if refund is not None:
        assert gateway is not None and payment is not None and payment.psp_reference
        problems = await _refund(ctx, gateway, refund, payment.psp_reference, audit=None)
        if problems:
            problems = [
                Problem(
                    p.code, f"the order is canceled, but its refund failed: {p.message}", p.field
                )
                for p in problems
            ]
    return Result(await _order(ctx, order_id), problems)


# --------------------------------------------------------------------------- promo codes


class PromoCodeInput(Protocol):
    """PromoCodeCreateInput / PromoCodeUpdateInput. On update, absent fields hold the
    schema's UNSET sentinel (neither None nor a value of the field's type)."""

    @property
    def code(self) -> str | None: ...
    @property
    def kind(self) -> Any: ...
    @property
    def value(self) -> Decimal | None: ...
    @property
    def min_subtotal(self) -> Decimal | None: ...
    @property
    def starts_at(self) -> Any: ...
    @property
    def ends_at(self) -> Any: ...
    @property
    def usage_limit(self) -> Any: ...
    @property
    def once_per_customer(self) -> bool | None: ...


def _given(value: Any, kind: type | tuple[type, ...]) -> bool:
    """A nullable field the client sent (as a value or as null), not left out."""
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _enum(value: Any) -> str | None:
    return getattr(value, "value", value) if value is not None else None


def _clean_code(value: str, problems: list[Problem]) -> str | None:
    code = value.strip().upper()
    if not code:
        problems.append(Problem("REQUIRED", "this field cannot be empty", "input.code"))
        return None
    if len(code) > CODE_LIMIT or not code.isascii() or not CODE_RE.match(code):
        problems.append(
            Problem(
                "INVALID",
                f"a code is letters, digits, '-' and '_' (at most {CODE_LIMIT})",
                "input.code",
            )
        )
        return None
    return code


def _promo_value(kind: str, value: Decimal, currency: str, problems: list[Problem]) -> int | None:
    """PERCENTAGE: percent with at most 2 decimals, 0 < v <= 100, stored in basis points;
    FIXED: a positive amount in the currency's minor units."""
    if not value.is_finite() or value <= 0:
        problems.append(Problem("INVALID", "the value must be positive", "input.value"))
        return None
    if kind == "PERCENTAGE":
        points = value * 100
        if value > 100 or points != points.to_integral_value():
            problems.append(
                Problem(
                    "INVALID",
                    "a percentage is above 0 and at most 100, with at most 2 decimals",
                    "input.value",
                )
            )
            return None
        return int(points)
    return to_minor_units(value, currency, "input.value", problems)


def _moment(value: Any, path: str, problems: list[Problem]) -> datetime | None:
    if isinstance(value, datetime) and value.tzinfo is None:
        problems.append(Problem("INVALID", "dates need a UTC offset", path))
        return None
    return value if isinstance(value, datetime) else None


def _promo_values(
    data: PromoCodeInput,
    current: PromoCodeRecord | None,
    currency: str,
    problems: list[Problem],
) -> tuple[dict[str, Any], list[str]]:
    """The columns to write and the camelCase input fields given. `current` is the code
    being updated (None on create)."""
    values: dict[str, Any] = {}
    changed: list[str] = []
    if data.code is not None:
        changed.append("code")
        code = _clean_code(data.code, problems)
        if code is not None:
            values["code"] = code
    kind = _enum(data.kind)
    if kind is not None:
        changed.append("kind")
        values["kind"] = kind
        if data.value is None and current is not None and kind != current.kind:
            problems.append(
                Problem("REQUIRED", "give the value when you change the kind", "input.value")
            )
    final_kind = kind or (current.kind if current is not None else "PERCENTAGE")
    if data.value is not None:
        changed.append("value")
        values["value"] = _promo_value(final_kind, data.value, currency, problems)
    if data.min_subtotal is not None:
        changed.append("minSubtotal")
        values["min_subtotal_amount"] = to_minor_units(
            data.min_subtotal, currency, "input.minSubtotal", problems
        )
    creating = current is None
    for attr, name in (("starts_at", "startsAt"), ("ends_at", "endsAt")):
        raw = getattr(data, attr)
        if _given(raw, datetime) and not (creating and raw is None):
            changed.append(name)
            values[attr] = _moment(raw, f"input.{name}", problems)
    starts = values.get("starts_at", current.starts_at if current else None)
    ends = values.get("ends_at", current.ends_at if current else None)
    if starts is not None and ends is not None and ends <= starts:
        problems.append(Problem("INVALID", "the end must be after the start", "input.endsAt"))
    if _given(data.usage_limit, int) and not (creating and data.usage_limit is None):
        changed.append("usageLimit")
        limit = data.usage_limit
        if limit is not None and limit < 1:
            problems.append(Problem("INVALID", "a usage limit is at least 1", "input.usageLimit"))
        values["usage_limit"] = limit
    if data.once_per_customer is not None:
        changed.append("oncePerCustomer")
        values["once_per_customer"] = data.once_per_customer
    return values, changed


async def promo_code_create(ctx: Context, data: PromoCodeInput) -> Result[PromoCodeRecord]:
    viewer = ctx.require_permission(DISCOUNTS)
    problems: list[Problem] = []
    currency = ctx.settings.currency
    values, changed = _promo_values(data, None, currency, problems)
    if problems:
        return Result(None, problems)
    values["currency"] = currency
    try:
        async with ctx.db.transaction() as conn:
            if await ca.code_holder(conn, code=values["code"]) is not None:
                raise _abort("UNIQUE", "another promo code has this code", "input.code")
            promo_id = await ca.create_promo_code(conn, values=values)
            await record_audit(
                conn,
                actor=viewer,
                action="promoCodeCreate",
                object_type="PromoCode",
                object_key=promo_id,
                changed=changed,
            )
            promo = (await ca.promo_codes_by_ids(conn, ids=[promo_id]))[promo_id]
    except _Abort as exc:
        return Result(None, exc.problems)
    except ca.CodeTaken:
        return Result(None, [Problem("UNIQUE", "another promo code has this code", "input.code")])
    return Result(promo)


async def promo_code_update(
    ctx: Context, gid: str, data: PromoCodeInput
) -> Result[PromoCodeRecord]:
    viewer = ctx.require_permission(DISCOUNTS)
    problems: list[Problem] = []
    promo_id = decode_id(gid, "PromoCode", "id", problems)
    if problems:
        return Result(None, problems)
    assert promo_id is not None
    try:
        async with ctx.db.transaction() as conn:
            current = (await ca.promo_codes_by_ids(conn, ids=[promo_id], for_update=True)).get(
                promo_id
            )
            if current is None:
                raise _abort("NOT_FOUND", "no promo code has this ID", "id")
            values, changed = _promo_values(data, current, current.currency, problems)
            if problems:
                raise _Abort(problems)
            code = values.get("code")
            if code is not None and code != current.code:
                if await ca.code_holder(conn, code=code) is not None:
                    raise _abort("UNIQUE", "another promo code has this code", "input.code")
            if values:
                await ca.update_promo_code(
                    conn, promo_id=promo_id, old_code=current.code, values=values
                )
            await record_audit(
                conn,
                actor=viewer,
                action="promoCodeUpdate",
                object_type="PromoCode",
                object_key=promo_id,
                changed=changed,
            )
            promo = (await ca.promo_codes_by_ids(conn, ids=[promo_id]))[promo_id]
    except _Abort as exc:
        return Result(None, exc.problems)
    except ca.CodeTaken:
        return Result(None, [Problem("UNIQUE", "another promo code has this code", "input.code")])
    except ca.UsageBelowUses as exc:
        return Result(
            None,
            [
                Problem(
                    "INVALID",
                    f"the code was used {exc.used} times already",
                    "input.usageLimit",
                )
            ],
        )
    return Result(promo)


async def promo_code_delete(ctx: Context, gid: str) -> Result[PromoCodeRecord]:
    viewer = ctx.require_permission(DISCOUNTS)
    problems: list[Problem] = []
    promo_id = decode_id(gid, "PromoCode", "id", problems)
    if problems:
        return Result(None, problems)
    assert promo_id is not None
    try:
        async with ctx.db.transaction() as conn:
            deleted = await ca.delete_promo_code(conn, promo_id=promo_id)
            if deleted is None:
                raise _abort("NOT_FOUND", "no promo code has this ID", "id")
            await record_audit(
                conn,
                actor=viewer,
                action="promoCodeDelete",
                object_type="PromoCode",
                object_key=promo_id,
            )
    except _Abort as exc:
        return Result(None, exc.problems)
    return Result(deleted)


class PromoCodeFilterInput(Protocol):
    @property
    def search(self) -> str | None: ...
    @property
    def kind(self) -> Any: ...


async def promo_codes(
    ctx: Context, *, args: PageArgs, promo_filter: PromoCodeFilterInput | None
) -> Page[PromoCodeRecord]:
    ctx.require_permission(DISCOUNTS)
    search = None
    kind = None
    if promo_filter is not None:
        if promo_filter.search is not None:
            search = promo_filter.search.strip().upper()
            if len(search) > MAX_SEARCH or not search.isprintable():
                raise InvalidInput("`filter.search` is too long", field="filter.search")
        kind = _enum(promo_filter.kind)
    return await ca.list_promo_codes(
        ctx.db,
        window=ca.promo_window(args),
        promo_filter=PromoCodeFilter(search=search or None, kind=kind),
    )


# --------------------------------------------------------------------------- shipping


class ShippingMethodInput(Protocol):
    """ShippingMethodCreateInput / ShippingMethodUpdateInput (`free_above` UNSET when
    left out of an update)."""

    @property
    def name(self) -> str | None: ...
    @property
    def price(self) -> Decimal | None: ...
    @property
    def countries(self) -> Sequence[str] | None: ...
    @property
    def free_above(self) -> Any: ...


def _countries(values: Sequence[str], problems: list[Problem]) -> str | None:
    if not values:
        problems.append(Problem("REQUIRED", "list at least one country", "input.countries"))
        return None
    if len(values) > MAX_COUNTRIES:
        problems.append(Problem("INVALID", f"at most {MAX_COUNTRIES} countries", "input.countries"))
        return None
    codes: list[str] = []
    for i, value in enumerate(values):
        code = value.strip().upper()
        if code not in COUNTRY_CODES:
            problems.append(
                Problem("INVALID", "not an ISO 3166-1 alpha-2 country code", f"input.countries.{i}")
            )
        elif code not in codes:
            codes.append(code)
    return " ".join(codes)


def _method_values(
    data: ShippingMethodInput, currency: str, problems: list[Problem], *, create: bool
) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    changed: list[str] = []
    name = clean_text(data.name, "input.name", problems, limit=METHOD_NAME_LIMIT, required=create)
    if data.name is not None:
        changed.append("name")
        if name is not None and not name and "input.name" not in {p.field for p in problems}:
            problems.append(Problem("REQUIRED", "this field cannot be empty", "input.name"))
        values["name"] = name
    if data.price is not None:
        changed.append("price")
        values["price_amount"] = to_minor_units(data.price, currency, "input.price", problems)
    elif create:
        problems.append(Problem("REQUIRED", "this field is required", "input.price"))
    if data.countries is not None:
        changed.append("countries")
        values["countries"] = _countries(data.countries, problems)
    elif create:
        problems.append(Problem("REQUIRED", "this field is required", "input.countries"))
    if _given(data.free_above, Decimal) and not (create and data.free_above is None):
        changed.append("freeAbove")
        values["free_above_amount"] = (
            to_minor_units(data.free_above, currency, "input.freeAbove", problems)
            if data.free_above is not None
            else None
        )
    return values, changed


async def shipping_method_create(
    ctx: Context, data: ShippingMethodInput
) -> Result[ShippingMethodRecord]:
    viewer = ctx.require_permission(SHIPPING)
    problems: list[Problem] = []
    currency = ctx.settings.currency
    values, changed = _method_values(data, currency, problems, create=True)
    if problems:
        return Result(None, problems)
    values["currency"] = currency
    async with ctx.db.transaction() as conn:
        method_id = await ca.create_shipping_method(conn, values=values)
        await record_audit(
            conn,
            actor=viewer,
            action="shippingMethodCreate",
            object_type="ShippingMethod",
            object_key=method_id,
            changed=changed,
        )
        method = await ca.shipping_method(conn, method_id=method_id)
    ctx.__dict__.pop("commerce", None)
    return Result(method)


async def shipping_method_update(
    ctx: Context, gid: str, data: ShippingMethodInput
) -> Result[ShippingMethodRecord]:
    viewer = ctx.require_permission(SHIPPING)
    problems: list[Problem] = []
    method_id = decode_id(gid, "ShippingMethod", "id", problems)
    if problems:
        return Result(None, problems)
    assert method_id is not None
    try:
        async with ctx.db.transaction() as conn:
            current = await ca.shipping_method(conn, method_id=method_id)
            if current is None:
                raise _abort("NOT_FOUND", "no shipping method has this ID", "id")
            values, changed = _method_values(data, current.currency, problems, create=False)
            if problems:
                raise _Abort(problems)
            if values:
                await ca.update_shipping_method(conn, method_id=method_id, values=values)
            await record_audit(
                conn,
                actor=viewer,
                action="shippingMethodUpdate",
                object_type="ShippingMethod",
                object_key=method_id,
                changed=changed,
            )
            method = await ca.shipping_method(conn, method_id=method_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    ctx.__dict__.pop("commerce", None)
    return Result(method)


async def shipping_method_delete(ctx: Context, gid: str) -> Result[ShippingMethodRecord]:
    viewer = ctx.require_permission(SHIPPING)
    problems: list[Problem] = []
    method_id = decode_id(gid, "ShippingMethod", "id", problems)
    if problems:
        return Result(None, problems)
    assert method_id is not None
    try:
        async with ctx.db.transaction() as conn:
            method = await ca.shipping_method(conn, method_id=method_id)
            if method is None or not await ca.delete_shipping_method(conn, method_id=method_id):
                raise _abort("NOT_FOUND", "no shipping method has this ID", "id")
            await record_audit(
                conn,
                actor=viewer,
                action="shippingMethodDelete",
                object_type="ShippingMethod",
                object_key=method_id,
            )
    except _Abort as exc:
        return Result(None, exc.problems)
    ctx.__dict__.pop("commerce", None)
    return Result(method)
