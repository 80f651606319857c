"""Payment gateways behind one small interface.

A gateway must be idempotent by key: charging again with the same idempotency key returns
the first outcome and never charges twice. That is what makes checkoutComplete safe to
retry after a crash between the charge and the order.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

import sqlalchemy as sa

from models.db import Database, insert_ignoring_conflicts, utcnow
from models.payments.tables import dummy_charges, dummy_refunds

Outcome = Literal["succeeded", "declined", "invalid", "error"]


@dataclass(frozen=True, slots=True)
class ChargeResult:
    outcome: Outcome
    reference: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class RefundResult:
    ok: bool
    message: str = ""


class Gateway(Protocol):
    name: str

    def accepts(self, token: str) -> bool:
        """Cheap syntax check of a payment token, before any stock is reserved."""
        ...

    async def charge(
        self, *, amount: int, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult: ...

    async def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult: ...


class DummyGateway:
    """Development and test gateway with Stripe's test tokens. It keeps its own ledger
    (as a real PSP would on its side), written in its own transaction."""

    name = "dummy"
    SUCCEEDS = frozenset({"tok_visa", "tok_mastercard"})
    DECLINES = {
        "tok_chargeDeclined": "Your card was declined.",
        "tok_chargeDeclinedInsufficientFunds": "Your card has insufficient funds.",
        "tok_chargeDeclinedExpiredCard": "Your card has expired.",
    }

    def __init__(self, db: Database) -> None:
        self.db = db

    def accepts(self, token: str) -> bool:
        return token in self.SUCCEEDS or token in self.DECLINES

    async def charge(
        self, *, amount: int, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        if not self.accepts(token):
            return ChargeResult("invalid", message="unknown payment token")
        outcome = "succeeded" if token in self.SUCCEEDS else "declined"
        async with self.db.transaction() as conn:
            # First writer wins; a concurrent or repeated call reads the first outcome.
            await conn.execute(
                insert_ignoring_conflicts(dummy_charges, self.db.dialect).values(
                    idempotency_key=idempotency_key,
                    reference=f"dummy_{secrets.token_hex(12)}",
                    amount=amount,
                    currency=currency,
                    outcome=outcome,
                    created_at=utcnow(),
                )
            )
            known = (
                await conn.execute(
                    sa.select(dummy_charges).where(
                        dummy_charges.c.idempotency_key == idempotency_key
                    )
                )
            ).one()
        reference, outcome = known.reference, known.outcome
        if outcome == "succeeded":
            return ChargeResult("succeeded", reference)
        if outcome == "voided":
            return ChargeResult("declined", reference, "this payment was cancelled")
        return ChargeResult("declined", reference, self.DECLINES.get(token, "declined"))

    async def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        """Refund part of a charge; idempotent by key (a retry answers the first outcome
        and never refunds twice), and never more than was charged."""
        async with self.db.transaction() as conn:
            first = await conn.execute(
                insert_ignoring_conflicts(dummy_refunds, self.db.dialect).values(
                    idempotency_key=idempotency_key,
                    reference=reference,
                    amount=amount,
                    outcome="pending",
                    created_at=utcnow(),
                )
            )
            if first.rowcount == 1:
                result = await conn.execute(
                    dummy_charges.update()
                    .where(
                        dummy_charges.c.reference == reference,
                        dummy_charges.c.outcome == "succeeded",
                        dummy_charges.c.currency == currency,
                        dummy_charges.c.refunded_amount + amount <= dummy_charges.c.amount,
                    )
                    .values(refunded_amount=dummy_charges.c.refunded_amount + amount)
                )
                outcome = "succeeded" if result.rowcount == 1 else "refused"
                await conn.execute(
                    dummy_refunds.update()
                    .where(dummy_refunds.c.idempotency_key == idempotency_key)
                    .values(outcome=outcome)
                )
            else:
                known = (
                    await conn.execute(
                        sa.select(dummy_refunds).where(
                            dummy_refunds.c.idempotency_key == idempotency_key
                        )
                    )
                ).one()
                same = known.reference == reference and known.amount == amount
                outcome = known.outcome if same else "mismatch"
        if outcome == "succeeded":
            return RefundResult(True)
        if outcome == "mismatch":
            return RefundResult(False, "this idempotency key was used for another refund")
        return RefundResult(False, "nothing left to refund on this charge")

    async def void(self, idempotency_key: str) -> ChargeResult:
        """Make the key's outcome final: a charge already made stands; otherwise the key
        is voided and any later charge with it is declined."""
        async with self.db.transaction() as conn:
            await conn.execute(
                insert_ignoring_conflicts(dummy_charges, self.db.dialect).values(
                    idempotency_key=idempotency_key,
                    reference=f"dummy_void_{secrets.token_hex(10)}",
                    amount=0,
                    currency="XXX",
                    outcome="voided",
                    created_at=utcnow(),
                )
            )
            final = (
                await conn.execute(
                    sa.select(dummy_charges).where(
                        dummy_charges.c.idempotency_key == idempotency_key
                    )
                )
            ).one()
        outcome: Outcome = "succeeded" if final.outcome == "succeeded" else "declined"
        return ChargeResult(outcome, final.reference)

    async def lookup(self, idempotency_key: str) -> ChargeResult | None:
        """What became of a charge made with this key (None: it never reached us)."""
        async with self.db.read() as conn:
            known = (
                await conn.execute(
                    sa.select(dummy_charges).where(
                        dummy_charges.c.idempotency_key == idempotency_key
                    )
                )
            ).first()
        if known is None:
            return None
        outcome: Outcome = "succeeded" if known.outcome == "succeeded" else "declined"
        return ChargeResult(outcome, known.reference)

    async def charges_for(self, idempotency_key: str) -> int:
        """How many charges exist for a key (0 or 1): the tests' view of the PSP."""
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        sa.select(sa.func.count()).where(
                            dummy_charges.c.idempotency_key == idempotency_key,
                            dummy_charges.c.outcome == "succeeded",
                        )
                    )
                ).scalar_one()
            )
