"""Rows of a batched child query, grouped under their parent's key as records (or read from
a parent row that embeds them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

R = TypeVar("R")


def group_records(rows: Iterable[Any], key: str, record: Callable[..., R]) -> dict[Any, list[R]]:
    """{row.<key>: [record(*row), ...]} keeping the rows' order within each parent."""
    return group_by((record(*row) for row in rows), key)


def group_by(records: Iterable[R], key: str) -> dict[Any, list[R]]:
    """{record.<key>: [record, ...]} keeping the records' order within each parent (for
    rows read as records already: `fetch_all(..., into=Record)`)."""
    grouped: dict[Any, list[R]] = {}
    for record in records:
        grouped.setdefault(getattr(record, key), []).append(record)
    return grouped


def prime_embedded(loader: Any, rows: Iterable[Any], column: str, record: Callable[..., R]) -> None:
    """Seed `loader` (keyed by parent id) with the children each parent row embeds: the
    array of tuples in `column` (null for none) as `[record(*t), ...]`, as its batch would
    answer them."""
    prime = loader.prime
    for row in rows:
        found = getattr(row, column)
        prime(row.id, [record(*values) for values in found] if found else [])
