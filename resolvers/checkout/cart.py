"""Building a checkout: lines, email, address, shipping method, promo code; totals."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.checkout import pricing
from models.checkout import queries as q
from models.checkout.pricing import PromoRecord, ShippingMethodRecord, Totals
from models.checkout.queries import MAX_LINES, MAX_QUANTITY, CheckoutLineRecord, CheckoutRecord
from models.db import utcnow
from models.errors import InvalidInput, Problem
from models.orders import queries as oq
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


def fail(code: str, message: str, path: str | None = None) -> list[Problem]:
    return [Problem(code, message, path)]


# --------------------------------------------------------------------------- lines


def _parse_lines(lines: Sequence[LineInput], path: str) -> dict[int, int] | list[Problem]:
    """Variant ID -> quantity (duplicates summed), or problems with their input paths."""
    problems: list[Problem] = []
    wanted: dict[int, int] = {}
    if len(lines) > MAX_LINES:
        return fail("TOO_MANY_LINES", f"a checkout holds at most {MAX_LINES} lines", path)
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


async def check_variants(conn: Any, wanted: dict[int, int], path: str) -> list[Problem]:
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
        return fail("INVALID", exc.message, field_name)
    viewer_id = ctx.viewer.id if ctx.viewer else None
    checkout = await q.checkout_for_update(conn, token=token, viewer_id=viewer_id)
    if checkout is None:
        return fail("NOT_FOUND", "no such checkout", field_name)
    if checkout.status == "COMPLETED":
        return fail("CHECKOUT_COMPLETED", "this checkout is completed", field_name)
    if checkout.status == "COMPLETING":
        return fail("CHECKOUT_IN_PROGRESS", "this checkout is being completed", field_name)
    return checkout


async def _done(ctx: Context, conn: Any, checkout: CheckoutRecord) -> CheckoutResult:
    """The checkout as it now is (re-read as the viewer: attaching changes its owner)."""
    viewer_id = ctx.viewer.id if ctx.viewer else None
    fresh = await q.checkout_for_update(conn, token=checkout.token, viewer_id=viewer_id)
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
        problems = await check_variants(conn, wanted, "input.lines")
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
                errors=fail("TOO_MANY_LINES", f"a checkout holds at most {MAX_LINES} lines", path)
            )
        growing = {v: qty for v, qty in changes.items() if qty > 0}
        problems = await check_variants(conn, growing, path)
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
    if len(lines) > MAX_LINES:
        return CheckoutResult(
            errors=fail("TOO_MANY_LINES", f"at most {MAX_LINES} lines at once", "lines")
        )
    problems: list[Problem] = []
    by_line: dict[int, int] = {}
    for i, line in enumerate(lines):
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
            return fail(
                "NOT_FOUND", f"no line {ids.encode('CheckoutLine', missing[0])} here", "lines"
            )
        return {owned[line_id]: qty for line_id, qty in by_line.items()}

    return await _change_lines(ctx, gid, compute, "lines")


async def checkout_lines_delete(ctx: Context, gid: str, line_ids: Sequence[str]) -> CheckoutResult:
    if len(line_ids) > MAX_LINES:
        return CheckoutResult(
            errors=fail("TOO_MANY_LINES", f"at most {MAX_LINES} lines at once", "lineIds")
        )
    try:
        decoded = [
            ids.decode(i, "CheckoutLine", field=f"lineIds.{n}") for n, i in enumerate(line_ids)
        ]
    except InvalidInput as exc:
        return CheckoutResult(errors=fail("INVALID", exc.message, exc.field))

    def compute(current: list[CheckoutLineRecord]) -> dict[int, int] | list[Problem]:
        owned = {line.id: line.variant_id for line in current}
        if any(i not in owned for i in decoded):
            return fail("NOT_FOUND", "no such line in this checkout", "lineIds")
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
        return CheckoutResult(errors=fail("INVALID", exc.message, exc.field))
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        method = (await q.shipping_methods_by_ids(conn, ids=[method_id])).get(method_id)
        if method is None:
            return CheckoutResult(
                errors=fail("NOT_FOUND", "no such shipping method", "shippingMethodId")
            )
        if checkout.shipping_address_id is None:
            return CheckoutResult(
                errors=fail("REQUIRED", "set a shipping address first", "shippingAddress")
            )
        country = await country_of(conn, checkout.shipping_address_id)
        if not method.serves(country):
            return CheckoutResult(
                errors=fail(
                    "SHIPPING_METHOD_NOT_AVAILABLE",
                    f"{method.name} does not ship to {country}",
                    "shippingMethodId",
                )
            )
        await q.update_checkout(conn, checkout_id=checkout.id, shipping_method_id=method_id)
        return await _done(ctx, conn, checkout)


async def country_of(conn: Any, address_id: int) -> str | None:
    found = await oq.addresses_by_ids(conn, ids=[address_id])
    return found[address_id].country_code if address_id in found else None


def customer_keys(checkout: CheckoutRecord) -> list[str]:
    """Who a single-use code is single-use for: the account and the email, so neither
    signing out nor switching accounts uses it twice."""
    keys = [f"user:{checkout.user_id}"] if checkout.user_id is not None else []
    return keys + ([f"email:{checkout.email}"] if checkout.email else [])


async def _subtotal(conn: Any, checkout: CheckoutRecord) -> int:
    lines = (await q.lines_by_checkout_ids(conn, checkout_ids=[checkout.id])).get(checkout.id, [])
    info = await q.variant_info(conn, variant_ids=[line.variant_id for line in lines])
    return sum(line.quantity * info[line.variant_id].price_amount for line in lines)


async def promo_problem(
    conn: Any, checkout: CheckoutRecord, promo: PromoRecord | None, subtotal: int
) -> list[Problem] | None:
    if promo is None:
        return fail("PROMO_CODE_INVALID", "no such promo code", "promoCode")
    problem = promo.problem(subtotal=subtotal, currency=checkout.currency, now=utcnow())
    if problem is not None:
        return fail(problem[0], problem[1], "promoCode")
    if promo.once_per_customer:
        keys = customer_keys(checkout)
        if not keys:
            return fail("REQUIRED", "this code needs the checkout's email first", "email")
        if await q.redeemed_by(conn, promo_id=promo.id, customer_keys=keys):
            return fail("PROMO_CODE_ALREADY_USED", "you have used this code already", "promoCode")
    return None


async def checkout_promo_code_apply(ctx: Context, gid: str, code: str) -> CheckoutResult:
    normalized = code.strip().upper()
    if not normalized or len(normalized) > MAX_PROMO_LENGTH or not normalized.isprintable():
        return CheckoutResult(errors=fail("PROMO_CODE_INVALID", "no such promo code", "promoCode"))
    async with ctx.db.transaction() as conn:
        checkout = await _open_checkout(ctx, conn, gid)
        if isinstance(checkout, list):
            return CheckoutResult(errors=checkout)
        promo = (await q.promos_by_codes(conn, codes=[normalized])).get(normalized)
        problems = await promo_problem(conn, checkout, promo, await _subtotal(conn, checkout))
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
