"""Helpers every staff mutation shares: permission gate, ID decoding into payload errors,
text and slug validation, the audit entry.

A staff resolver starts with `viewer = ctx.require_permission(PERMISSION)` (raises
UNAUTHENTICATED / FORBIDDEN at the top level), validates everything into `Problem`s
before writing anything, and writes its change and its audit entry in one transaction.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from models.audit.queries import record_audit
from models.errors import InvalidInput, Problem
from models.money import MAX_MINOR_UNITS, exponent
from resolvers import ids

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from resolvers.context import Context

T = TypeVar("T")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f]")
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG = 255
MAX_URL = 2048


@dataclass
class Result(Generic[T]):
    """What a staff mutation hands back: the object (or None) and payload errors."""

    value: T | None = None
    errors: list[Problem] = field(default_factory=list)


def fail(code: str, message: str, path: str | None = None) -> Result[Any]:
    return Result(None, [Problem(code, message, path)])


def decode_id(gid: str, type_name: str, path: str, problems: list[Problem]) -> int | None:
    """The key of `gid`, or None with an INVALID problem at `path`."""
    try:
        return ids.decode(gid, type_name, field=path)
    except InvalidInput as exc:
        problems.append(Problem("INVALID", exc.message, path))
        return None


async def delete_audited(
    ctx: Context,
    gid: str,
    *,
    permission: str,
    type_name: str,
    noun: str,
    action: str,
    delete: Callable[[AsyncConnection, int], Awaitable[bool]],
) -> Result[str]:
    """The staff delete mutations: permission, the ID, `delete(conn, key)` (False: there
    is no such object) and the audit entry in one transaction; the deleted ID back."""
    viewer = ctx.require_permission(permission)
    problems: list[Problem] = []
    key = decode_id(gid, type_name, "id", problems)
    if key is None:
        return Result(None, problems)
    async with ctx.db.transaction() as conn:
        if not await delete(conn, key):
            return fail("NOT_FOUND", f"no {noun} has this ID", "id")
        await record_audit(conn, actor=viewer, action=action, object_type=type_name, object_key=key)
    return Result(gid)


def clean_text(
    value: str | None,
    path: str,
    problems: list[Problem],
    *,
    limit: int,
    required: bool = False,
    multiline: bool = False,
) -> str | None:
    """Trimmed text within `limit` characters with no control characters (newlines and tabs
    allowed when `multiline`); None when absent. Empty is REQUIRED when `required`."""
    if value is None:
        if required:
            problems.append(Problem("REQUIRED", "this field is required", path))
        return None
    text = value.strip()
    if required and not text:
        problems.append(Problem("REQUIRED", "this field cannot be empty", path))
    elif len(text) > limit:
        problems.append(Problem("INVALID", f"at most {limit} characters", path))
    elif (_CONTROL if multiline else _CONTROL_LINE).search(text):
        problems.append(Problem("INVALID", "contains control characters", path))
    elif any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        problems.append(Problem("INVALID", "contains invalid characters", path))
    return text


def slugify(text: str) -> str:
    """ASCII, lower-case, hyphen-separated; "" when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:200].rstrip("-")


def clean_slug(value: str, path: str, problems: list[Problem]) -> str | None:
    slug = value.strip()
    if not slug or len(slug) > MAX_SLUG or not SLUG_RE.match(slug):
        problems.append(
            Problem(
                "INVALID",
                "a slug is lower-case letters, digits and single hyphens (at most 255)",
                path,
            )
        )
        return None
    return slug


def clean_url(value: str, path: str, problems: list[Problem]) -> str | None:
    """An absolute http(s) URL with a host, at most 2048 characters."""
    url = value.strip()
    try:
        parts = urlsplit(url)
        ok = (
            0 < len(url) <= MAX_URL
            and parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and not _CONTROL_LINE.search(url)
            and " " not in url
        )
    except ValueError:
        ok = False
    if not ok:
        problems.append(Problem("INVALID", "enter an absolute http(s) URL", path))
        return None
    return url


def to_minor_units(
    amount: Decimal | None, currency: str, path: str, problems: list[Problem]
) -> int | None:
    """A non-negative Decimal price in minor units; too many decimals, negative, NaN or
    absurd amounts are INVALID."""
    if amount is None:
        return None
    digits = exponent(currency)
    try:
        if not amount.is_finite() or amount < 0:
            raise InvalidOperation
        scaled = amount.scaleb(digits)
        if scaled != scaled.to_integral_value():
            problems.append(
                Problem("INVALID", f"{currency} amounts have at most {digits} decimals", path)
            )
            return None
        minor = int(scaled)
    except InvalidOperation:
        problems.append(Problem("INVALID", "a price is a non-negative amount", path))
        return None
    if minor > MAX_MINOR_UNITS:
        problems.append(Problem("INVALID", "this amount is too large", path))
        return None
    return minor
