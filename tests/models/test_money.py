"""models.money: Money from minor units, built once per amount and currency."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models import money as money_module
from models.money import Money, money
from schema.scalars import serialize_decimal


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [(1999, "USD", "19.99"), (0, "EUR", "0.00"), (-5, "USD", "-0.05"), (1500, "JPY", "1500"),
     (12345, "KWD", "12.345"), (10**15, "USD", "10000000000000.00")],
)  # fmt: skip
def test_money_scales_minor_units_by_the_currency(minor: int, currency: str, amount: str) -> None:
    value = money(minor, currency)
    assert value == Money(Decimal(amount), currency)
    assert format(value.amount, "f") == amount


def test_the_same_amount_is_one_immutable_object() -> None:
    first = money(2500, "USD")
    assert money(2500, "USD") is first
    assert money(2500, "EUR") is not first and money(2500, "EUR").currency == "EUR"
    with pytest.raises(AttributeError):
        first.amount = Decimal("1")  # type: ignore[misc]


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(money_module, "_BUILT", {})
    monkeypatch.setattr(money_module, "_MAX_BUILT", 10)
    values = [money(minor, "USD") for minor in range(25)]
    assert len(money_module._BUILT) <= 10
    assert [format(v.amount, "f") for v in values[:3]] == ["0.00", "0.01", "0.02"]


def test_non_integer_minor_units_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(money_module, "_BUILT", {})
    assert money(True, "USD") == Money(Decimal("0.01"), "USD")
    assert money_module._BUILT == {}  # True == 1: it must not stand for 1 cent later


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal(1999).scaleb(-2), "19.99"), (Decimal("-0.00"), "-0.00"), (Decimal("1E+2"), "100"),
     (Decimal("0E-7"), "0.0000000"), (Decimal("1.5E-8"), "0.000000015"),
     (Decimal(10**15).scaleb(-2), "10000000000000.00"), (Decimal(1500), "1500")],
)  # fmt: skip
def test_decimals_are_written_positionally_never_with_an_exponent(
    value: Decimal, text: str
) -> None:
    assert serialize_decimal(value) == text == format(value, "f")
