"""Checkout resolvers: building a cart, and completing it into a paid order exactly once.

checkoutComplete runs in three steps, each safe to crash after:

1. one transaction: validate, move the checkout OPEN -> COMPLETING, take the stock (one
   conditional statement), record a PENDING payment and the attempt with a snapshot of
   what is being bought, keyed by the idempotency key;
2. the charge, through a gateway that is idempotent by that same key;
3. one transaction: the attempt moves RESERVED -> COMPLETED exactly once and the order is
   written; or, on a decline, FAILED, and the stock goes back.

A retry with the same key resumes wherever the first call stopped; concurrent calls with
the same key converge on the same order; another key on a completed checkout is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from models.checkout import pricing
from models.checkout import queries as q
from models.checkout.pricing import PromoRecord, ShippingMethodRecord, Totals
from models.checkout.queries import MAX_LINES, MAX_QUANTITY, CheckoutLineRecord, CheckoutRecord
from models.db import Database, utcnow
from models.errors import InvalidInput, Problem
from models.orders import queries as oq
from models.orders.queries import OrderRecord
from models.payments.gateways import ChargeResult, Gateway
from resolvers import ids
from resolvers.accounts import AddressInput, clean_address, normalize_email
from resolvers.context import Context

logger = logging.getLogger("shopql.checkout")

MAX_KEY_LENGTH = 255
MAX_PROMO_LENGTH = 40


@dataclass
class CheckoutResult:
    checkout: CheckoutRecord | None = None
    errors: list[Problem] = field(default_factory=list)


@dataclass
class CompleteResult:
    order: OrderRecord | None = None
    errors: list[Problem] = field(default_factory=list)


class LineInput(Protocol):
    @property
    def variant_id(self) -> str: ...
    @property
    def quantity(self) -> int: ...


class LineUpdateInput(Protocol):
    @property
    def line_id(self) -> str: ...
    @property
    def quantity(self) -> int: ...


class CreateInput(Protocol):
    @property
    def lines(self) -> Sequence[LineInput]: ...
    @property
    def email(self) -> str | None: ...


class PaymentInput(Protocol):
    @property
    def gateway(self) -> str: ...
    @property
    def token(self) -> str: ...


def _fail(code: str, message: str, path: str | None = None) -> list[Problem]:
    return [Problem(code, message, path)]


# --------------------------------------------------------------------------- lines


def _parse_lines(lines: Sequence[LineInput], path: str) -> dict[int, int] | list[Problem]:
    """Variant ID -> quantity (duplicates summed), or problems with their input paths."""
    problems: list[Problem] = []
    wanted: dict[int, int] = {}
    if len(lines) > MAX_LINES:
        return _fail("TOO_MANY_LINES", f"a checkout holds at most {MAX_LINES} lines", path)
    for i, line in enumerate(lines):
        try:
            variant_id = ids.decode(
                line.variant_id, "ProductVariant", field=f"{path}.{i}.variantId"
            )
        except InvalidInput as exc:
            problems.append(Problem("INVALID", exc.message, exc.field))
            continue
        if not 1 <= line.quantity <= MAX_QUANTITY:
            problems.append(
                Problem(
                    "QUANTITY_OUT_OF_RANGE",
                    f"quantity must be between 1 and {MAX_QUANTITY}",
                    f"{path}.{i}.quantity",
                )
            )
            continue
        wanted[variant_id] = wanted.get(variant_id, 0) + line.quantity
    return problems or wanted


async def _check_variants(conn: Any, wanted: dict[int, int], path: str) -> list[Problem]:
    """Every variant exists, is for sale, and has the stock (quantities are final)."""
    info = await q.variant_info(conn, variant_ids=list(wanted))
    problems = []
    for variant_id, quantity in wanted.items():
        gid = ids.encode("ProductVariant", variant_id)
        found = info.get(variant_id)
        if found is None or not found.is_published:
            code = "NOT_FOUND" if found is None else "PRODUCT_UNAVAILABLE"
            problems.append(Problem(code, f"variant {gid} is not for sale", path))
        elif quantity > MAX_QUANTITY:
            problems.append(
                Problem("QUANTITY_OUT_OF_RANGE", f"at most {MAX_QUANTITY} of {gid}", path)
            )
        elif quantity > found.quantity:
            problems.append(
                Problem("INSUFFICIENT_STOCK", f"only {found.quantity} of {gid} in stock", path)
            )
    return problems


async def _open_checkout(
    ctx: Context, conn: Any, gid: str, *, field_name: str = "checkoutId"
) -> CheckoutRecord | list[Problem]:
    """The viewer's (or a guest) checkout, locked and still open; else the problem."""
    try:
        token = ids.decode_token(gid, "Checkout", field=field_name)
    except InvalidInput as exc:
        return _fail("INVALID", exc.message, field_name)
    viewer_id = ctx.viewer.id if ctx.viewer else None
    checkout = await q.checkout_for_update(conn, token=token, viewer_id=viewer_id)
    if checkout is None:
        return _fail("NOT_FOUND", "no such checkout", field_name)
    if checkout.status == "COMPLETED":
        return _fail("CHECKOUT_COMPLETED", "this checkout is completed", field_name)
    if checkout.status == "COMPLETING":
        return _fail("CHECKOUT_IN_PROGRESS", "this checkout is being completed", field_name)
    return checkout


async def _done(ctx: Context, conn: Any, checkout: CheckoutRecord) -> CheckoutResult:
    fresh = await q.checkout_for_update(conn, token=checkout.token, viewer_id=checkout.user_id)
    return CheckoutResult(checkout=fresh)


async def checkout_create(ctx: Context, data: CreateInput) -> CheckoutResult:
    wanted = _parse_lines(data.lines, "input.lines")
    if isinstance(wanted, list):
        return CheckoutResult(errors=wanted)
    email: str | None = None
    if data.email is not None:
        normalized = normalize_email(data.email, field="input.email")
        if isinstance(normalized, Problem):
            return CheckoutResult(errors=[normalized])
        email = normalized
    viewer = ctx.viewer
    if viewer is not None and email is None:
        email = viewer.email
    async with ctx.db.transaction() as conn:
        problems = await _check_variants(conn, wanted, "input.lines")
        if problems:
            return CheckoutResult(errors=problems)
        checkout = await q.create_checkout(
            conn,
            user_id=viewer.id if viewer else None,
            email=email,
            currency=ctx.settings.currency,
        )
        await q.set_line_quantities(conn, checkout_id=checkout.id, current=[], wanted=wanted)
    return CheckoutResult(checkout=checkout)


async def _change_lines(ctx: Context, gid: str, compute: Any, path: str) -> CheckoutResult:
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        current = (await q.lines_by_checkout_ids(conn, checkout_ids=[checkout.id])).get(
            checkout.id, []
        )
        changes = compute(current)
        if isinstance(changes, list):
            return CheckoutResult(errors=changes)
        final = {line.variant_id: line.quantity for line in current}
        final.update(changes)
        if sum(1 for quantity in final.values() if quantity > 0) > MAX_LINES:
            return CheckoutResult(
                errors=_fail("TOO_MANY_LINES", f"a checkout holds at most {MAX_LINES} lines", path)
            )
        growing = {v: qty for v, qty in changes.items() if qty > 0}
        problems = await _check_variants(conn, growing, path)
        if problems:
            return CheckoutResult(errors=problems)
        await q.set_line_quantities(conn, checkout_id=checkout.id, current=current, wanted=changes)
        await q.update_checkout(conn, checkout_id=checkout.id)
        return await _done(ctx, conn, checkout)


async def checkout_lines_add(ctx: Context, gid: str, lines: Sequence[LineInput]) -> CheckoutResult:
    added = _parse_lines(lines, "lines")
    if isinstance(added, list):
        return CheckoutResult(errors=added)

    def compute(current: list[CheckoutLineRecord]) -> dict[int, int]:
        have = {line.variant_id: line.quantity for line in current}
        return {v: have.get(v, 0) + qty for v, qty in added.items()}

    return await _change_lines(ctx, gid, compute, "lines")


async def checkout_lines_update(
    ctx: Context, gid: str, lines: Sequence[LineUpdateInput]
) -> CheckoutResult:
    problems: list[Problem] = []
    by_line: dict[int, int] = {}
    for i, line in enumerate(lines[: MAX_LINES + 1]):
        try:
            line_id = ids.decode(line.line_id, "CheckoutLine", field=f"lines.{i}.lineId")
        except InvalidInput as exc:
            problems.append(Problem("INVALID", exc.message, exc.field))
            continue
        if not 0 <= line.quantity <= MAX_QUANTITY:
            problems.append(
                Problem(
                    "QUANTITY_OUT_OF_RANGE",
                    f"quantity must be between 0 (removes) and {MAX_QUANTITY}",
                    f"lines.{i}.quantity",
                )
            )
            continue
        by_line[line_id] = line.quantity
    if problems:
        return CheckoutResult(errors=problems)

    def compute(current: list[CheckoutLineRecord]) -> dict[int, int] | list[Problem]:
        owned = {line.id: line.variant_id for line in current}
        missing = [i for i in by_line if i not in owned]
        if missing:
            return _fail(
                "NOT_FOUND", f"no line {ids.encode('CheckoutLine', missing[0])} here", "lines"
            )
        return {owned[line_id]: qty for line_id, qty in by_line.items()}

    return await _change_lines(ctx, gid, compute, "lines")


async def checkout_lines_delete(ctx: Context, gid: str, line_ids: Sequence[str]) -> CheckoutResult:
    try:
        decoded = [
            ids.decode(i, "CheckoutLine", field=f"lineIds.{n}")
            for n, i in enumerate(line_ids[: MAX_LINES + 1])
        ]
    except InvalidInput as exc:
        return CheckoutResult(errors=_fail("INVALID", exc.message, exc.field))

    def compute(current: list[CheckoutLineRecord]) -> dict[int, int] | list[Problem]:
        owned = {line.id: line.variant_id for line in current}
        if any(i not in owned for i in decoded):
            return _fail("NOT_FOUND", "no such line in this checkout", "lineIds")
        return {owned[i]: 0 for i in decoded}

    return await _change_lines(ctx, gid, compute, "lineIds")


async def checkout_email_update(ctx: Context, gid: str, email: str) -> CheckoutResult:
    normalized = normalize_email(email)
    if isinstance(normalized, Problem):
        return CheckoutResult(errors=[normalized])
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        await q.update_checkout(conn, checkout_id=checkout.id, email=normalized)
        return await _done(ctx, conn, checkout)


async def checkout_shipping_address_update(
    ctx: Context, gid: str, address: AddressInput
) -> CheckoutResult:
    from models.accounts.queries import create_address

    values = clean_address(address, prefix="address")
    if isinstance(values, list):
        return CheckoutResult(errors=values)
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        address_id = await create_address(conn, user_id=None, values=values)
        changes: dict[str, Any] = {"shipping_address_id": address_id}
        if checkout.shipping_method_id is not None:
            methods = await q.shipping_methods_by_ids(conn, ids=[checkout.shipping_method_id])
            method = methods.get(checkout.shipping_method_id)
            if method is None or not method.serves(values["country_code"]):
                changes["shipping_method_id"] = None  # no longer deliverable there
        await q.update_checkout(conn, checkout_id=checkout.id, **changes)
        return await _done(ctx, conn, checkout)


async def checkout_shipping_method_update(
    ctx: Context, gid: str, method_gid: str
) -> CheckoutResult:
    try:
        method_id = ids.decode(method_gid, "ShippingMethod", field="shippingMethodId")
    except InvalidInput as exc:
        return CheckoutResult(errors=_fail("INVALID", exc.message, exc.field))
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        method = (await q.shipping_methods_by_ids(conn, ids=[method_id])).get(method_id)
        if method is None:
            return CheckoutResult(
                errors=_fail("NOT_FOUND", "no such shipping method", "shippingMethodId")
            )
        if checkout.shipping_address_id is None:
            return CheckoutResult(
                errors=_fail("REQUIRED", "set a shipping address first", "shippingAddress")
            )
        country = await _country(conn, checkout.shipping_address_id)
        if not method.serves(country):
            return CheckoutResult(
                errors=_fail(
                    "SHIPPING_METHOD_NOT_AVAILABLE",
                    f"{method.name} does not ship to {country}",
                    "shippingMethodId",
                )
            )
        await q.update_checkout(conn, checkout_id=checkout.id, shipping_method_id=method_id)
        return await _done(ctx, conn, checkout)


async def _country(conn: Any, address_id: int) -> str | None:
    found = await oq.addresses_by_ids(conn, ids=[address_id])
    return found[address_id].country_code if address_id in found else None


def customer_key(checkout: CheckoutRecord) -> str | None:
    if checkout.user_id is not None:
        return f"user:{checkout.user_id}"
    return f"email:{checkout.email}" if checkout.email else None


async def _subtotal(conn: Any, checkout: CheckoutRecord) -> int:
    lines = (await q.lines_by_checkout_ids(conn, checkout_ids=[checkout.id])).get(checkout.id, [])
    info = await q.variant_info(conn, variant_ids=[line.variant_id for line in lines])
    return sum(line.quantity * info[line.variant_id].price_amount for line in lines)


async def _promo_problem(
    conn: Any, checkout: CheckoutRecord, promo: PromoRecord | None, subtotal: int
) -> list[Problem] | None:
    if promo is None:
        return _fail("PROMO_CODE_INVALID", "no such promo code", "promoCode")
    problem = promo.problem(subtotal=subtotal, currency=checkout.currency, now=utcnow())
    if problem is not None:
        return _fail(problem[0], problem[1], "promoCode")
    if promo.once_per_customer:
        key = customer_key(checkout)
        if key is None:
            return _fail("REQUIRED", "this code needs the checkout's email first", "email")
        if await q.redeemed_by(conn, promo_id=promo.id, customer_key=key):
            return _fail("PROMO_CODE_ALREADY_USED", "you have used this code already", "promoCode")
    return None


async def checkout_promo_code_apply(ctx: Context, gid: str, code: str) -> CheckoutResult:
    normalized = code.strip().upper()
    if not normalized or len(normalized) > MAX_PROMO_LENGTH or not normalized.isprintable():
        return CheckoutResult(errors=_fail("PROMO_CODE_INVALID", "no such promo code", "promoCode"))
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        promo = (await q.promos_by_codes(conn, codes=[normalized])).get(normalized)
        problems = await _promo_problem(conn, checkout, promo, await _subtotal(conn, checkout))
        if problems:
            return CheckoutResult(errors=problems)
        await q.update_checkout(conn, checkout_id=checkout.id, promo_code=normalized)
        return await _done(ctx, conn, checkout)


async def checkout_promo_code_remove(ctx: Context, gid: str) -> CheckoutResult:
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        await q.update_checkout(conn, checkout_id=checkout.id, promo_code=None)
        return await _done(ctx, conn, checkout)


async def checkout_customer_attach(ctx: Context, gid: str) -> CheckoutResult:
    """Signing in: the guest checkout the shopper built becomes their own."""
    viewer = ctx.require_viewer()
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        if checkout.user_id is None:
            await q.attach_user(
                conn, checkout_id=checkout.id, user_id=viewer.id, email=viewer.email
            )
        return await _done(ctx, conn, checkout)


# --------------------------------------------------------------------------- totals


async def totals_of(ctx: Context, checkout: CheckoutRecord) -> Totals:
    """Current totals from current prices (cached for the request)."""
    cache: dict[int, Totals] = ctx.cache.setdefault("checkout_totals", {})
    if checkout.id in cache:
        return cache[checkout.id]
    loaders = ctx.commerce
    lines = await loaders.lines_by_checkout_id.load(checkout.id)
    variants = await ctx.catalog.any_variant_by_id.load_many([line.variant_id for line in lines])
    method = (
        await loaders.shipping_method_by_id.load(checkout.shipping_method_id)
        if checkout.shipping_method_id is not None
        else None
    )
    promo = await loaders.promo_by_code.load(checkout.promo_code) if checkout.promo_code else None
    result = pricing.totals(
        lines=[
            (line.quantity, v.price_amount)
            for line, v in zip(lines, variants, strict=True)
            if v is not None
        ],
        currency=checkout.currency,
        method=method,
        promo=promo,
        now=utcnow(),
    )
    cache[checkout.id] = result
    return result


async def available_shipping_methods(
    ctx: Context, checkout: CheckoutRecord
) -> list[ShippingMethodRecord]:
    country = None
    if checkout.shipping_address_id is not None:
        address = await ctx.commerce.address_by_id.load(checkout.shipping_address_id)
        country = address.country_code if address is not None else None
    return [m for m in await shipping_methods(ctx) if m.serves(country)]


async def shipping_methods(ctx: Context) -> list[ShippingMethodRecord]:
    cached = ctx.cache.get("shipping_methods")
    if cached is None:
        async with ctx.db.read() as conn:
            cached = ctx.cache["shipping_methods"] = await q.list_shipping_methods(conn)
    return list(cached)


async def checkout(ctx: Context, gid: str) -> CheckoutRecord | None:
    token = ids.decode_token(gid, "Checkout")
    return await ctx.commerce.checkout_by_token.load(token)


# --------------------------------------------------------------------------- complete


def _fingerprint(checkout_id: int, payment: PaymentInput) -> str:
    raw = f"{checkout_id}\x00{payment.gateway}\x00{payment.token}"
    return hashlib.sha256(raw.encode()).hexdigest()


async def checkout_complete(
    ctx: Context, gid: str, payment: PaymentInput, key: str
) -> CompleteResult:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        return CompleteResult(
            errors=_fail(
                "INVALID", "idempotencyKey must be 1-255 printable characters", "idempotencyKey"
            )
        )
    gateway = ctx.services.gateways.get(payment.gateway)
    if gateway is None:
        return CompleteResult(
            errors=_fail(
                "INVALID", f"unknown payment gateway {payment.gateway[:40]!r}", "payment.gateway"
            )
        )
    try:
        token = ids.decode_token(gid, "Checkout", field="checkoutId")
    except InvalidInput as exc:
        return CompleteResult(errors=_fail("INVALID", exc.message, "checkoutId"))
    viewer_id = ctx.viewer.id if ctx.viewer else None

    async with ctx.db.transaction() as conn:
        checkout = await q.checkout_for_update(conn, token=token, viewer_id=viewer_id)
        if checkout is None:
            return CompleteResult(errors=_fail("NOT_FOUND", "no such checkout", "checkoutId"))
        attempt = await q.attempt_by_key(conn, key=key)
        if attempt is not None:
            if attempt.fingerprint != _fingerprint(checkout.id, payment):
                return CompleteResult(
                    errors=_fail(
                        "IDEMPOTENCY_KEY_REUSED",
                        "this idempotency key was used for another checkout or payment",
                        "idempotencyKey",
                    )
                )
        else:
            started = await _reserve(ctx, conn, checkout, payment, key)
            if isinstance(started, list):
                return CompleteResult(errors=started)
            attempt = started
    if attempt.state == "COMPLETED":
        return CompleteResult(order=await _order(ctx, attempt.order_id))
    if attempt.state == "FAILED":
        return CompleteResult(
            errors=_fail(attempt.error_code or "PAYMENT_DECLINED", attempt.error_message or "")
        )
    return await resume(ctx, key, payment.token)


async def _reserve(
    ctx: Context, conn: Any, checkout: CheckoutRecord, payment: PaymentInput, key: str
) -> q.AttemptRecord | list[Problem]:
    """Step 1: validate, take the stock, record the payment and the attempt."""
    if checkout.status == "COMPLETED":
        return _fail("CHECKOUT_COMPLETED", "this checkout is completed already", "checkoutId")
    if checkout.status == "COMPLETING":
        return _fail(
            "CHECKOUT_IN_PROGRESS",
            "this checkout is being completed with another idempotency key",
            "checkoutId",
        )
    gateway = ctx.services.gateways[payment.gateway]
    if not gateway.accepts(payment.token):
        return _fail("INVALID", "the payment token is not valid for this gateway", "payment.token")
    lines = (await q.lines_by_checkout_ids(conn, checkout_ids=[checkout.id])).get(checkout.id, [])
    problems: list[Problem] = []
    if not lines:
        problems += _fail("REQUIRED", "the checkout has no lines", "lines")
    if not checkout.email:
        problems += _fail("REQUIRED", "the checkout needs an email", "email")
    if checkout.shipping_address_id is None:
        problems += _fail("REQUIRED", "the checkout needs a shipping address", "shippingAddress")
    if checkout.shipping_method_id is None:
        problems += _fail("REQUIRED", "the checkout needs a shipping method", "shippingMethod")
    if problems:
        return problems
    wanted = {line.variant_id: line.quantity for line in lines}
    problems = await _check_variants(conn, wanted, "lines")
    if problems:
        return problems
    info = await q.variant_info(conn, variant_ids=list(wanted))
    assert checkout.shipping_method_id is not None and checkout.shipping_address_id is not None
    method = (await q.shipping_methods_by_ids(conn, ids=[checkout.shipping_method_id])).get(
        checkout.shipping_method_id
    )
    country = await _country(conn, checkout.shipping_address_id)
    if method is None or not method.serves(country):
        return _fail(
            "SHIPPING_METHOD_NOT_AVAILABLE",
            "the shipping method does not ship there",
            "shippingMethod",
        )
    promo = None
    if checkout.promo_code:
        promo = (await q.promos_by_codes(conn, codes=[checkout.promo_code])).get(
            checkout.promo_code
        )
        subtotal = sum(qty * info[v].price_amount for v, qty in wanted.items())
        promo_problems = await _promo_problem(conn, checkout, promo, subtotal)
        if promo_problems:
            return promo_problems
    totals = pricing.totals(
        lines=[(qty, info[v].price_amount) for v, qty in wanted.items()],
        currency=checkout.currency,
        method=method,
        promo=promo,
        now=utcnow(),
    )
    if not await q.take_stock(conn, quantities=wanted):
        # Someone bought the last units since the check above: nothing was taken.
        return _fail("INSUFFICIENT_STOCK", "not enough stock left for this checkout", "lines")
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
        "promo_id": promo.id if promo is not None else None,
        "customer_key": customer_key(checkout),
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
            errors=_fail(
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
    """Step 3: exactly one caller moves the attempt on; the others find it done."""
    # A concurrent call with the same key may have settled it first; its outcome stands.
    with contextlib.suppress(_AlreadySettledError):
        await _settle(db, attempt, charge)


async def _settle(db: Database, attempt: q.AttemptRecord, charge: ChargeResult) -> None:
    snap = attempt.snapshot
    quantities = {line["variant_id"]: line["quantity"] for line in snap["lines"]}
    async with db.transaction() as conn:
        if charge.outcome == "succeeded":
            order_id = await oq.create_order(
                conn,
                checkout_id=attempt.checkout_id,
                user_id=snap["user_id"],
                email=snap["email"],
                currency=snap["currency"],
                subtotal=snap["subtotal"],
                shipping=snap["shipping"],
                discount=snap["discount"],
                shipping_address_id=await oq.copy_address(conn, address_id=snap["address_id"])
                if snap["address_id"] is not None
                else None,
                shipping_method_name=snap["method_name"],
                promo_code=snap["promo_code"],
                lines=snap["lines"],
            )
            if not await q.finish_attempt(
                conn, key=attempt.idempotency_key, state="COMPLETED", order_id=order_id
            ):
                raise _AlreadySettledError
            assert attempt.payment_id is not None
            await oq.settle_payment(
                conn,
                payment_id=attempt.payment_id,
                status="PAID",
                psp_reference=charge.reference,
                order_id=order_id,
            )
            await q.update_checkout(conn, checkout_id=attempt.checkout_id, status="COMPLETED")
            if snap["promo_id"] is not None:
                promos = await q.promos_by_codes(conn, codes=[snap["promo_code"]])
                promo = promos.get(snap["promo_code"])
                if promo is not None:
                    await q.redeem_promo(
                        conn,
                        promo=promo,
                        customer_key=snap["customer_key"] or f"order:{order_id}",
                        order_id=order_id,
                    )
            logger.info("order %s created from checkout %s", order_id, attempt.checkout_id)
        else:
            code = "PAYMENT_DECLINED" if charge.outcome == "declined" else "INVALID"
            if not await q.finish_attempt(
                conn,
                key=attempt.idempotency_key,
                state="FAILED",
                error_code=code,
                error_message=charge.message[:300] or "the payment was declined",
            ):
                raise _AlreadySettledError
            await q.return_stock(conn, quantities=quantities)
            assert attempt.payment_id is not None
            await oq.settle_payment(
                conn, payment_id=attempt.payment_id, status="FAILED", psp_reference=charge.reference
            )
            await q.update_checkout(
                conn, checkout_id=attempt.checkout_id, status="OPEN", completion_key=None
            )


class _AlreadySettledError(Exception):
    """Another call settled the attempt first: roll this transaction back."""


async def recover_stale(
    db: Database, gateways: Mapping[str, Gateway], *, older_than: timedelta
) -> dict[str, int]:
    """Settle completions abandoned between reserving and settling (the client never
    retried): completed when the gateway holds a successful charge for the key,
    otherwise released (stock back, checkout open). Run by `shopql recover-checkouts`."""
    async with db.read() as conn:
        stale = await q.stale_attempts(conn, older_than=utcnow() - older_than)
    counts = {"completed": 0, "released": 0, "skipped": 0}
    for attempt in stale:
        gateway = gateways.get(attempt.snapshot["gateway"])
        lookup = getattr(gateway, "lookup", None)
        if lookup is None:
            counts["skipped"] += 1
            logger.warning("cannot recover attempt on gateway %s", attempt.snapshot["gateway"])
            continue
        charge = await lookup(attempt.idempotency_key)
        if charge is None or charge.outcome != "succeeded":
            charge = ChargeResult("declined", None, "abandoned before the payment completed")
        await settle(db, attempt, charge)
        counts["completed" if charge.outcome == "succeeded" else "released"] += 1
    return counts


async def _outcome(ctx: Context, attempt: q.AttemptRecord) -> CompleteResult:
    if attempt.state == "COMPLETED":
        return CompleteResult(order=await _order(ctx, attempt.order_id))
    return CompleteResult(
        errors=_fail(attempt.error_code or "PAYMENT_DECLINED", attempt.error_message or "declined")
    )


async def _order(ctx: Context, order_id: int | None) -> OrderRecord | None:
    """The order of a completion this caller may see (it holds the checkout)."""
    assert order_id is not None
    async with ctx.db.read() as conn:
        return (await oq.orders_by_ids(conn, ids=[order_id], owner_id=None, all_orders=True)).get(
            order_id
        )
