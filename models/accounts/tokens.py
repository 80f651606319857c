"""Access tokens (short-lived HS256 JWTs) and opaque refresh/reset tokens (stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import jwt

ISSUER = "shopql"
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    session_id: str
    expires_at: int


class InvalidToken(Exception):
    """Expired, tampered, malformed or foreign: the reason is never shown to the client."""


def create_access_token(*, secret: str, user_id: int, session_id: str, ttl: int) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "sid": session_id,
        "iat": now,
        "exp": now + ttl,
        "typ": "access",
        "jti": secrets.token_urlsafe(9),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# token -> (secret, claims) of tokens that passed verification: the signature and claims
# of the same bytes under the same secret verify the same way every time, so a token is
# checked once and then only its expiry (PyJWT's decode was ~4% of an authenticated
# 20-order request). Bounded: past the limit it starts over.
_VERIFIED: dict[str, tuple[str, AccessClaims]] = {}
_MAX_VERIFIED = 4096


def _now() -> float:
    return time.time()


def verify_access_token(token: str, *, secret: str) -> AccessClaims:
    known = _VERIFIED.get(token)
    if known is not None and known[0] == secret:
        claims = known[1]
        if claims.expires_at <= _now():  # PyJWT's rule, no leeway
            raise InvalidToken("ExpiredSignatureError")
        return claims
    claims = _verify(token, secret)
    if len(_VERIFIED) >= _MAX_VERIFIED:
        _VERIFIED.clear()
    _VERIFIED[token] = (secret, claims)
    return claims


def _verify(token: str, secret: str) -> AccessClaims:
    if len(token) > 2048:
        raise InvalidToken("token too long")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None
    sub, sid = claims.get("sub"), claims.get("sid")
    if claims.get("typ") != "access" or not isinstance(sid, str) or not isinstance(sub, str):
        raise InvalidToken("wrong claims")
    if not sub.isdigit() or len(sub) > 18:
        raise InvalidToken("bad subject")
    return AccessClaims(int(sub), sid, int(claims["exp"]))


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_id() -> str:
    return secrets.token_hex(16)
