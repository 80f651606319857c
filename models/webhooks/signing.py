"""The signature receivers check (documented in the README, "Webhooks").

    Shopql-Timestamp: <unix seconds>
    Shopql-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

The key is the webhook's secret as UTF-8 bytes; the message is the timestamp header's
value, a full stop, and the exact request body bytes. Receivers compare in constant time
and refuse timestamps more than 5 minutes away from their clock (replay protection).
"""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (the README's example, minus the clock check)."""
    if not timestamp.isdigit():
        return False
    expected = signature(secret, int(timestamp), body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))
