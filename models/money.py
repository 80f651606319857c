"""Money as integer minor units plus an ISO 4217 code; `Decimal` only at the edges."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

# Minor-unit exponents for the currencies that differ from the usual 2.
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

MAX_MINOR_UNITS = 10**15  # far above any real price; keeps every amount inside BIGINT


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str


# Money values are immutable: the same amount in the same currency is built once (every
# listing answers the same few prices over and over). Bounded: it starts over when full.
_BUILT: dict[tuple[int, str], Money] = {}
_MAX_BUILT = 4096


def money(minor: int, currency: str) -> Money:
    if type(minor) is not int:
        return Money(Decimal(minor).scaleb(-exponent(currency)), currency)
    key = (minor, currency)
    built = _BUILT.get(key)
    if built is None:
        built = Money(Decimal(minor).scaleb(-exponent(currency)), currency)
        if len(_BUILT) >= _MAX_BUILT:
            _BUILT.clear()
        _BUILT[key] = built
    return built


def to_minor(amount: Decimal, currency: str, *, rounding: str = ROUND_HALF_EVEN) -> int:
    """Convert a Decimal amount to minor units, rounding with the given mode."""
    exp = exponent(currency)
    return int(amount.scaleb(exp).to_integral_value(rounding=rounding))


def to_minor_floor(amount: Decimal, currency: str) -> int:
    return to_minor(amount, currency, rounding=ROUND_FLOOR)


def to_minor_ceiling(amount: Decimal, currency: str) -> int:
    return to_minor(amount, currency, rounding=ROUND_CEILING)
