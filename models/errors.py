"""Exceptions the data layer raises for expected failures; the GraphQL layer maps them."""

from __future__ import annotations


class InvalidInput(ValueError):
    """An argument the client sent cannot be used (malformed cursor, out-of-range size...)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
