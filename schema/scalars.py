"""Custom scalars: `Decimal` is an exact decimal serialized as a string ("19.99")."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import strawberry

MAX_DIGITS = 18
MAX_PLACES = 6


def parse_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError('Decimal must be a string such as "19.99"')
    text = repr(value) if isinstance(value, float) else str(value)
    if len(text) > 40:
        raise ValueError("Decimal is too long")
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text[:40]!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError("Decimal must be a finite number")
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if -exponent > MAX_PLACES:
        raise ValueError(f"Decimal may have at most {MAX_PLACES} decimal places")
    if len(digits) + min(exponent, 0) > MAX_DIGITS - MAX_PLACES or number.adjusted() > 11:
        raise ValueError("Decimal is out of range")
    return number


def serialize_decimal(value: Decimal) -> str:
    # Positional notation, never an exponent ("100", not "1E+2"). `str` gives the same
    # text whenever it writes no exponent (every Money amount: minor units scaled down),
    # at a quarter of format's cost.
    text = str(value)
    return text if "E" not in text else format(value, "f")


# Used through StrawberryConfig.scalar_map: fields annotated `Decimal` use it.
DECIMAL_SCALAR = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number, serialized as a string ("19.99"). Never a float.',
    serialize=serialize_decimal,
    parse_value=parse_decimal,
)
