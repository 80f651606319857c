"""Exceptions the data layer raises for expected failures; the GraphQL layer maps them."""

from __future__ import annotations


class InvalidInput(ValueError):
    """An argument the client sent cannot be used (malformed cursor, out-of-range size...)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotAuthenticated(Exception):
    """No valid token where one is required (top-level UNAUTHENTICATED)."""

    def __init__(self, message: str = "sign in to do this") -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """Signed in, but without the permission this needs (top-level FORBIDDEN)."""

    def __init__(self, message: str = "you do not have permission to do this") -> None:
        super().__init__(message)
        self.message = message


class Problem:
    """One expected failure of a mutation, rendered as a payload error."""

    __slots__ = ("code", "field", "message")

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"Problem({self.code!r}, {self.message!r}, field={self.field!r})"
