"""Checkout arithmetic in integer minor units. Always computed on the server from current
prices; a percentage discount rounds half-even."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ShippingMethodRecord:
    id: int
    name: str
    price_amount: int
    currency: str
    countries: tuple[str, ...]
    free_above_amount: int | None

    def serves(self, country: str | None) -> bool:
        return country is None or country in self.countries

    def price_for(self, subtotal: int) -> int:
        if self.free_above_amount is not None and subtotal >= self.free_above_amount:
            return 0
        return self.price_amount


@dataclass(frozen=True, slots=True)
class PromoRecord:
    id: int
    code: str
    kind: str  # PERCENTAGE (value in basis points) or FIXED (value in minor units)
    value: int
    currency: str
    min_subtotal_amount: int
    starts_at: datetime | None
    ends_at: datetime | None
    usage_limit: int | None
    used_count: int
    once_per_customer: bool

    def problem(self, *, subtotal: int, currency: str, now: datetime) -> tuple[str, str] | None:
        """Why the code cannot apply now, as (code, message), or None."""
        if self.starts_at is not None and now < self.starts_at:
            return "PROMO_CODE_INVALID", "this promo code is not active yet"
        if self.ends_at is not None and now >= self.ends_at:
            return "PROMO_CODE_EXPIRED", "this promo code has expired"
        if self.usage_limit is not None and self.used_count >= self.usage_limit:
            return "PROMO_CODE_EXHAUSTED", "this promo code has been used up"
        if self.kind == "FIXED" and self.currency != currency:
            return "PROMO_CODE_INVALID", "this promo code is for another currency"
        if subtotal < self.min_subtotal_amount:
            return "PROMO_CODE_MIN_SUBTOTAL", "the order is below this promo code's minimum"
        return None

    def discount_on(self, subtotal: int) -> int:
        if self.kind == "FIXED":
            return min(self.value, subtotal)
        return percentage(subtotal, self.value)


def percentage(amount: int, basis_points: int) -> int:
    """amount * bp / 10000, rounded half to even, in exact integer arithmetic."""
    quotient, remainder = divmod(amount * basis_points, 10_000)
    if remainder * 2 > 10_000 or (remainder * 2 == 10_000 and quotient % 2 == 1):
        quotient += 1
    return quotient


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal: int
    shipping: int
    discount: int
    total: int
    currency: str
    promo_applies: bool


def totals(
    *,
    lines: Sequence[tuple[int, int]],  # (quantity, unit price)
    currency: str,
    method: ShippingMethodRecord | None,
    promo: PromoRecord | None,
    now: datetime,
) -> Totals:
    subtotal = sum(quantity * unit for quantity, unit in lines)
    applies = (
        promo is not None and promo.problem(subtotal=subtotal, currency=currency, now=now) is None
    )
    discount = promo.discount_on(subtotal) if applies and promo is not None else 0
    shipping = method.price_for(subtotal - discount) if method is not None and lines else 0
    return Totals(subtotal, shipping, discount, subtotal - discount + shipping, currency, applies)
