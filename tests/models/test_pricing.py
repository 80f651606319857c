"""Checkout arithmetic: exact integer minor units, percentages rounded half to even, and
totals that add up to the cent (property-based against a decimal.Decimal reference), then
the same through HTTP on a completed order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import checkout_flow as f
import httpx
import pytest
import sqlalchemy as sa
from conftest import make_client
from hypothesis import example, given
from hypothesis import strategies as st

from models.checkout.pricing import PromoRecord, ShippingMethodRecord, percentage, totals
from models.db import Database
from models.payments.tables import dummy_charges

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def reference_percentage(amount: int, basis_points: int) -> int:
    """amount x bp / 10000 rounded half to even, by decimal.Decimal."""
    with localcontext() as ctx:
        ctx.prec = 60
        exact = Decimal(amount) * Decimal(basis_points) / Decimal(10_000)
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@given(st.integers(0, 10**15), st.integers(0, 10_000))
@example(1, 5000)  # 0.5 -> 0
@example(3, 5000)  # 1.5 -> 2
@example(5, 5000)  # 2.5 -> 2
@example(3004, 1250)  # 375.5 -> 376
@example(2996, 1250)  # 374.5 -> 374
@example(10**15, 10_000)
def test_percentage_rounds_half_to_even_exactly(amount: int, basis_points: int) -> None:
    result = percentage(amount, basis_points)
    assert type(result) is int
    assert result == reference_percentage(amount, basis_points)
    assert 0 <= result <= amount


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [(1, 5000, 0), (3, 5000, 2), (5, 5000, 2), (7, 5000, 4), (1999, 1250, 250), (2004, 1250, 250),
     (2012, 1250, 252), (1, 1, 0), (5000, 1, 0), (5001, 1, 1), (15000, 1, 2), (25000, 1, 2)],
)  # fmt: skip
def test_percentage_known_values(amount: int, basis_points: int, expected: int) -> None:
    assert percentage(amount, basis_points) == expected


methods = st.builds(
    ShippingMethodRecord,
    id=st.just(1),
    name=st.just("Standard"),
    price_amount=st.integers(0, 10_000),
    currency=st.just("USD"),
    countries=st.just(("US",)),
    free_above_amount=st.none() | st.integers(0, 100_000),
)
moments = st.none() | st.integers(-3, 3).map(lambda days: NOW + timedelta(days=days))


@st.composite
def promos(draw: st.DrawFn) -> PromoRecord:
    kind = draw(st.sampled_from(["PERCENTAGE", "FIXED"]))
    limit = draw(st.none() | st.integers(0, 5))
    return PromoRecord(
        id=1,
        code="CODE",
        kind=kind,
        value=draw(st.integers(1, 10_000) if kind == "PERCENTAGE" else st.integers(1, 200_000)),
        currency=draw(st.sampled_from(["USD", "USD", "EUR"])),
        min_subtotal_amount=draw(st.integers(0, 100_000)),
        starts_at=draw(moments),
        ends_at=draw(moments),
        usage_limit=limit,
        used_count=draw(st.integers(0, limit if limit is not None else 5)),
        once_per_customer=draw(st.booleans()),
    )


def applies(promo: PromoRecord, subtotal: int) -> bool:
    """The rules written out independently of the code under test."""
    return (
        (promo.starts_at is None or promo.starts_at <= NOW)
        and (promo.ends_at is None or NOW < promo.ends_at)
        and (promo.usage_limit is None or promo.used_count < promo.usage_limit)
        and (promo.kind == "PERCENTAGE" or promo.currency == "USD")
        and subtotal >= promo.min_subtotal_amount
    )


@given(
    lines=st.lists(st.tuples(st.integers(1, 999), st.integers(0, 1_000_000)), max_size=100),
    method=st.none() | methods,
    promo=st.none() | promos(),
)
def test_totals_add_up_to_the_cent(
    lines: list[tuple[int, int]], method: ShippingMethodRecord | None, promo: PromoRecord | None
) -> None:
    result = totals(lines=lines, currency="USD", method=method, promo=promo, now=NOW)
    subtotal = sum(quantity * unit for quantity, unit in lines)
    assert all(type(v) is int for v in (result.subtotal, result.shipping, result.discount))
    assert result.currency == "USD"
    assert result.subtotal == subtotal
    assert 0 <= result.discount <= result.subtotal
    assert result.total == result.subtotal - result.discount + result.shipping
    assert result.total >= 0

    if promo is not None and applies(promo, subtotal):
        assert result.promo_applies
        expected_discount = (
            reference_percentage(subtotal, promo.value)
            if promo.kind == "PERCENTAGE"
            else min(promo.value, subtotal)
        )
    else:
        assert not result.promo_applies
        expected_discount = 0
    assert result.discount == expected_discount

    if method is None or not lines:
        assert result.shipping == 0
    elif method.free_above_amount is not None and subtotal - expected_discount >= (
        method.free_above_amount
    ):
        assert result.shipping == 0  # free from the threshold, after the discount
    else:
        assert result.shipping == method.price_amount


def test_free_shipping_threshold_is_inclusive_and_after_discount() -> None:
    standard = ShippingMethodRecord(1, "Standard", 499, "USD", ("US",), 5000)
    save5 = PromoRecord(1, "SAVE5", "FIXED", 500, "USD", 2500, None, None, None, 0, False)

    def shipping(lines: list[tuple[int, int]], promo: PromoRecord | None = None) -> int:
        return totals(lines=lines, currency="USD", method=standard, promo=promo, now=NOW).shipping

    assert shipping([(1, 4999)]) == 499
    assert shipping([(1, 5000)]) == 0
    assert shipping([(1, 5499)], save5) == 499  # 54.99 - 5.00 < 50.00
    assert shipping([(1, 5500)], save5) == 0
    assert shipping([]) == 0


@pytest.mark.parametrize(
    ("changes", "subtotal", "problem"),
    [
        ({}, 1000, None),
        ({"starts_at": NOW + timedelta(seconds=1)}, 1000, "PROMO_CODE_INVALID"),
        ({"starts_at": NOW}, 1000, None),
        ({"ends_at": NOW}, 1000, "PROMO_CODE_EXPIRED"),
        ({"ends_at": NOW + timedelta(seconds=1)}, 1000, None),
        ({"usage_limit": 3, "used_count": 3}, 1000, "PROMO_CODE_EXHAUSTED"),
        ({"usage_limit": 3, "used_count": 2}, 1000, None),
        ({"min_subtotal_amount": 1001}, 1000, "PROMO_CODE_MIN_SUBTOTAL"),
        ({"min_subtotal_amount": 1000}, 1000, None),
        ({"kind": "FIXED", "value": 100, "currency": "EUR"}, 1000, "PROMO_CODE_INVALID"),
        ({"currency": "EUR"}, 1000, None),  # a percentage has no currency
    ],
)
def test_promo_problems(changes: dict[str, object], subtotal: int, problem: str | None) -> None:
    values: dict[str, object] = {
        "id": 1, "code": "C", "kind": "PERCENTAGE", "value": 1000, "currency": "USD",
        "min_subtotal_amount": 0, "starts_at": None, "ends_at": None, "usage_limit": None,
        "used_count": 0, "once_per_customer": False,
    }  # fmt: skip
    promo = PromoRecord(**{**values, **changes})  # type: ignore[arg-type]
    found = promo.problem(subtotal=subtotal, currency="USD", now=NOW)
    assert (found[0] if found else None) == problem


# ------------------------------------------------------------------------------ through HTTP


@pytest.fixture
async def http(fresh_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fresh_db) as client:
        yield client


@pytest.mark.parametrize(
    ("quantities", "discount"),
    [((1, 3, 6), 376), ((1, 2, 331), 374)],  # 30.04 x 12.5 % = 3.755; 29.96 x 12.5 % = 3.745
)
async def test_an_odd_cents_percentage_promo_adds_up_on_the_order(
    fresh_db: Database, http: httpx.AsyncClient, quantities: tuple[int, int, int], discount: int
) -> None:
    found = await f.stock_variants(fresh_db, 3, prices=[1999, 333, 1])
    await f.add_promo(fresh_db, "TWELVE5", kind="PERCENTAGE", value=1250)
    gql = f.caller(http)
    lines = list(zip(found, quantities, strict=True))
    subtotal = sum(q * p for q, p in zip(quantities, (1999, 333, 1), strict=True))
    assert subtotal % 8 == 4  # exactly half a cent of discount: the rounding is tested
    assert discount == reference_percentage(subtotal, 1250)
    checkout = await f.ready_checkout(gql, lines, promo="TWELVE5")
    expected = [subtotal, 499, discount, subtotal - discount + 499]
    assert [f.minor(checkout[k]["amount"]) for k in ("subtotal", "shippingPrice", "discount",
                                                     "total")] == expected  # fmt: skip

    payload = await f.complete(gql, checkout["id"], "k-odd")
    assert payload["errors"] == []
    order = payload["order"]
    amounts = [f.minor(order[k]["amount"]) for k in ("subtotal", "shippingPrice", "discount",
                                                     "total")]  # fmt: skip
    assert amounts == expected
    line_totals = [f.minor(line["totalPrice"]["amount"]) for line in order["lines"]]
    assert sum(line_totals) == amounts[0]
    assert [f.minor(line["unitPrice"]["amount"]) * line["quantity"] for line in order["lines"]] == (
        line_totals
    )
    assert amounts[0] - amounts[2] + amounts[1] == amounts[3]
    assert f.minor(order["payments"][0]["amount"]["amount"]) == amounts[3]
    async with fresh_db.read() as conn:
        charged = (await conn.execute(sa.select(dummy_charges.c.amount))).scalar_one()
    assert charged == amounts[3]
