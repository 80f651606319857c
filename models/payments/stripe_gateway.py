"""Stripe as a payment gateway: one card PaymentIntent, created and confirmed in one call.

The checkoutComplete idempotency key travels as Stripe's `Idempotency-Key`, so a retried
charge replays Stripe's first answer instead of charging again (Stripe keeps keys for at
least 24 hours). It is also stored in the intent's metadata, so a webhook can find a
payment whose charge outcome was never recorded.

Requests go through stripe's async httpx client: the event loop is never blocked.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import stripe

from models.money import exponent
from models.payments.gateways import ChargeResult, RefundResult

logger = logging.getLogger("shopql.payments.stripe")

# PaymentMethod IDs (pm_..., including test ones like pm_card_visa) and card tokens (tok_...).
_TOKEN = re.compile(r"(?:pm|tok)_[A-Za-z0-9_]{1,200}")
METADATA_KEY = "shopql_idempotency_key"
DEFAULT_TIMEOUT = 30.0

# Stripe's minor units where they differ from the usual 2 (https://docs.stripe.com/currencies).
# ISK is zero-decimal in ISO 4217 and in models.money, but two-decimal in Stripe's API.
_STRIPE_ZERO_DECIMAL = frozenset({
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
    "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
})  # fmt: skip
_STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

_GENERIC_DECLINE = "Your card was declined."
_UNREACHABLE = "the payment provider could not be reached"


def _stripe_exponent(currency: str) -> int:
    if currency in _STRIPE_ZERO_DECIMAL:
        return 0
    return 3 if currency in _STRIPE_THREE_DECIMAL else 2


def to_stripe_amount(amount: int, currency: str) -> int | None:
    """Our minor units as Stripe's `amount`, or None when Stripe cannot express it exactly."""
    shift = _stripe_exponent(currency) - exponent(currency)
    if shift >= 0:
        value = amount * 10**shift
    else:
        factor = 10**-shift
        if amount % factor:
            return None
        value = amount // factor
    if currency in _STRIPE_THREE_DECIMAL and value % 10:
        return None  # Stripe wants the last digit of three-decimal amounts to be 0
    return value


def from_stripe_amount(amount: int, currency: str) -> int:
    """A Stripe `amount` in our minor units."""
    shift = _stripe_exponent(currency.upper()) - exponent(currency.upper())
    return amount // 10**shift if shift >= 0 else amount * 10**-shift


class _HTTPXClient(stripe.HTTPXClient):
    """stripe's httpx client, but sending the encoded form as `content=`.

    The stock client passes the body string as `data=`, which httpx 0.28 deprecates: a
    DeprecationWarning on every POST, and where warnings are errors the client turns that
    warning into an APIConnectionError, so no charge could ever be made.
    """

    def _get_request_args_kwargs(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if data:
            kwargs["content"] = data
        return args, kwargs


def _intent_id(exc: stripe.StripeError) -> str | None:
    """The PaymentIntent an API error is about (Stripe includes it for card declines)."""
    intent = getattr(exc.error, "payment_intent", None) if exc.error is not None else None
    found = getattr(intent, "id", None)
    return found if isinstance(found, str) else None


def _is_about_payment_method(exc: stripe.InvalidRequestError) -> bool:
    param = exc.param or ""
    code = exc.code or ""
    return param.startswith("payment_method") or code.startswith("payment_method")


class StripeGateway:
    """Card payments through Stripe's PaymentIntents API (no redirects, no 3-D Secure
    challenge: a card that needs one is declined, since this API has no way to show it)."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        max_network_retries: int = 2,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        self._http = http_client or _HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key, http_client=self._http, max_network_retries=max_network_retries
        )

    def accepts(self, token: str) -> bool:
        return _TOKEN.fullmatch(token) is not None

    async def charge(
        self, *, amount: int, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        if not self.accepts(token):
            return ChargeResult("invalid", message="not a Stripe payment method")
        stripe_amount = to_stripe_amount(amount, currency)
        if stripe_amount is None or stripe_amount <= 0:
            return ChargeResult("invalid", message=f"Stripe cannot charge this {currency} amount")
        params: dict[str, Any] = {
            "amount": stripe_amount,
            "currency": currency.lower(),
            "confirm": True,
            "payment_method_types": ["card"],
            # This API cannot hand a 3-D Secure challenge to the shopper: fail instead of
            # leaving the intent waiting in requires_action.
            "error_on_requires_action": True,
            "metadata": {METADATA_KEY: idempotency_key},
        }
        if token.startswith("tok_"):
            params["payment_method_data"] = {"type": "card", "card": {"token": token}}
        else:
            params["payment_method"] = token
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]  # card tokens are not in the typed params
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            return ChargeResult("declined", _intent_id(exc), exc.user_message or _GENERIC_DECLINE)
        except stripe.InvalidRequestError as exc:
            if _is_about_payment_method(exc) or exc.param == "amount":
                return ChargeResult("invalid", _intent_id(exc), exc.user_message or "invalid")
            logger.error("Stripe refused a PaymentIntent request: %s", exc)
            return ChargeResult("invalid", _intent_id(exc), "the payment could not be processed")
        except stripe.IdempotencyError as exc:
            # The key was used with other parameters: what happened then is unknown here,
            # so the attempt stays open (retryable) rather than being marked failed.
            logger.error("Stripe idempotency conflict for a charge: %s", exc)
            return ChargeResult("error", message=_UNREACHABLE)
        except stripe.StripeError as exc:
            # Network failures, 5xx, rate limits, and bad credentials: nothing was charged
            # that a retry with the same key would not find again.
            logger.warning("Stripe charge failed (%s): %s", type(exc).__name__, exc)
            return ChargeResult("error", message=_UNREACHABLE)
        if intent.status == "succeeded":
            return ChargeResult("succeeded", intent.id)
        if intent.status == "requires_action":
            message = "the card needs authentication, which this checkout cannot do"
        else:
            error = getattr(intent, "last_payment_error", None)
            message = getattr(error, "message", None) or (
                f"the payment is {intent.status.replace('_', ' ')}"
            )
        return ChargeResult("declined", intent.id, message)

    async def refund(
        self, *, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        stripe_amount = to_stripe_amount(amount, currency)
        if stripe_amount is None or stripe_amount <= 0:
            return RefundResult(False, f"Stripe cannot refund this {currency} amount")
        try:
            refund = await self._client.v1.refunds.create_async(
                params={"payment_intent": reference, "amount": stripe_amount},
                options={"idempotency_key": idempotency_key},
            )
        except (stripe.CardError, stripe.InvalidRequestError) as exc:
            return RefundResult(False, exc.user_message or "the refund was refused")
        except stripe.StripeError as exc:
            logger.warning("Stripe refund failed (%s): %s", type(exc).__name__, exc)
            return RefundResult(False, f"{_UNREACHABLE}; retry with the same key")
        if refund.status in ("failed", "canceled"):
            reason = getattr(refund, "failure_reason", None) or refund.status
            return RefundResult(False, f"the refund {refund.status}: {reason.replace('_', ' ')}")
        return RefundResult(True)

    async def aclose(self) -> None:
        """Close the connection pool (at shutdown)."""
        await self._http.close_async()
