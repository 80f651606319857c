"""Opaque global IDs (Relay): base64 of "<Type>:<key>"."""

from __future__ import annotations

import base64
import binascii

from models.errors import InvalidInput

MAX_ID_LENGTH = 200
# Primary keys are 32-bit INTEGERs; a well-formed key above that names nothing, so it
# decodes to MISSING, which no row has (never a driver overflow error).
MAX_PRIMARY_KEY = 2**31 - 1
MISSING = -1
# Types whose key is an integer primary key.
INT_KEYED = frozenset(
    {
        "Product", "ProductVariant", "Category", "Collection", "User", "Address",
        "CheckoutLine", "Order", "OrderLine", "Payment", "ShippingMethod",
        "PromoCode", "Fulfillment", "AuditEntry", "Webhook", "WebhookDelivery",
    }
)  # fmt: skip
# Checkouts are keyed by their unguessable token, never by a sequential number.
TOKEN_KEYED = frozenset({"Checkout"})
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def encode(type_name: str, key: int | str) -> str:
    # base64.b64encode, without its wrapper's checks (this runs for every `id` answered)
    return binascii.b2a_base64(f"{type_name}:{key}".encode(), newline=False).decode("ascii")


def decode_any(gid: str, *, field: str = "id") -> tuple[str, int | str]:
    """(type name, key) of any known global ID, or InvalidInput."""
    invalid = InvalidInput(f"`{field}` is not a valid ID", field=field)
    if not isinstance(gid, str) or not 0 < len(gid) <= MAX_ID_LENGTH:
        raise invalid
    try:
        raw = base64.b64decode(gid, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid from None
    type_name, sep, key = raw.partition(":")
    if not sep:
        raise invalid
    if type_name in TOKEN_KEYED:
        if not 16 <= len(key) <= 64 or set(key) - _TOKEN_CHARS:
            raise invalid
        return type_name, key
    if type_name not in INT_KEYED or not key.isascii() or not key.isdigit():
        raise invalid
    number = int(key)
    if not 0 < number < 2**63 or key != str(number):
        raise invalid
    return type_name, number if number <= MAX_PRIMARY_KEY else MISSING


def _typed(gid: str, type_name: str, field: str) -> int | str:
    found, key = decode_any(gid, field=field)
    if found != type_name:
        raise InvalidInput(f"`{field}` must be the ID of a {type_name}", field=field)
    return key


def decode(gid: str, type_name: str, *, field: str = "id") -> int:
    """The key of a global ID that must be of the int-keyed `type_name`."""
    key = _typed(gid, type_name, field)
    assert isinstance(key, int)
    return key


def decode_token(gid: str, type_name: str, *, field: str = "id") -> str:
    """The token of a global ID that must be of the token-keyed `type_name`."""
    key = _typed(gid, type_name, field)
    assert isinstance(key, str)
    return key
