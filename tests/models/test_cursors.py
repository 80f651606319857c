"""Cursors are opaque, round-trip exactly, and anything else is refused as bad input."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from models.errors import InvalidInput
from models.pagination import MAX_PAGE_SIZE, PageArgs, SortKey, decode_cursor, encode_cursor

COL = sa.column("k")
ID = sa.column("id")
KEYS = {
    "str": SortKey("NAME", COL, ID, False, "str"),
    "int": SortKey("PRICE", COL, ID, False, "int"),
    "float": SortKey("RELEVANCE", COL, ID, True, "float"),
    "datetime": SortKey("CREATED_AT", COL, ID, True, "datetime"),
}
VALUES = {
    # Names as the database can hold them: valid Unicode (no lone surrogates), no NUL.
    "str": st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=50
    ),
    "int": st.integers(0, 2**62),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "datetime": st.datetimes(timezones=st.just(UTC)),
}
ids = st.integers(1, 2**31 - 1)


@pytest.mark.parametrize("kind", list(KEYS))
@given(data=st.data())
def test_cursors_round_trip(kind: str, data: st.DataObject) -> None:
    value = data.draw(VALUES[kind])
    row_id = data.draw(ids)
    cursor = encode_cursor(KEYS[kind].code, value, row_id)
    assert decode_cursor(cursor, KEYS[kind], field="after") == (value, row_id)


@given(st.text(max_size=300))
def test_arbitrary_text_is_never_a_crash(text: str) -> None:
    for key in KEYS.values():
        try:
            decode_cursor(text, key, field="after")
        except InvalidInput as exc:
            assert exc.field == "after"


def _raw(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode()


@pytest.mark.parametrize(
    ("cursor", "kind"),
    [
        (encode_cursor("NAME", "x", 1), "int"),  # a cursor of another order
        (_raw('["PRICE", "12", 1]'), "int"),
        (_raw('["PRICE", true, 1]'), "int"),
        (_raw('["PRICE", 12, 0]'), "int"),
        (_raw('["PRICE", 12, 1.5]'), "int"),
        (_raw('["PRICE", 12]'), "int"),
        (_raw('{"a": 1}'), "int"),
        (_raw('["CREATED_AT", "2025-01-01T00:00:00", 1]'), "datetime"),  # no offset
        (_raw('["CREATED_AT", "yesterday", 1]'), "datetime"),
        ("a" * 5000, "str"),
        ("%%%", "str"),
    ],
)
def test_malformed_or_foreign_cursors_are_refused(cursor: str, kind: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(cursor, KEYS[kind], field="before")


def test_names_with_nul_are_refused() -> None:
    # PostgreSQL text cannot hold NUL: such a cursor is foreign, never a driver error.
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor("NAME", "a\x00b", 1), KEYS["str"], field="after")


def test_datetime_cursor_keeps_microseconds() -> None:
    moment = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    cursor = encode_cursor("CREATED_AT", moment, 5)
    assert decode_cursor(cursor, KEYS["datetime"], field="after") == (moment, 5)


@pytest.mark.parametrize(
    "kwargs",
    [{"first": MAX_PAGE_SIZE + 1}, {"first": -1}, {"last": -5}, {"first": 1, "last": 1}],
)
def test_page_sizes_are_bounded(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidInput):
        PageArgs(**kwargs)  # type: ignore[arg-type]


def test_page_direction_and_default_size() -> None:
    assert PageArgs().size == 20 and not PageArgs().backward
    assert PageArgs(last=5).backward and PageArgs(before="c").backward
    assert not PageArgs(first=3, before="c").backward
