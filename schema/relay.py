"""Relay building blocks: the Node interface and generic connections over models.Page."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

import strawberry

from models.pagination import Page

T = TypeVar("T")


@strawberry.interface(description="An object with a global, opaque ID.")
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


def _total_count(root: strawberry.Parent[Page[Any]]) -> Awaitable[int]:
    return root.count()


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    nodes: list[T]
    page_info: PageInfo
    total_count: int = strawberry.field(
        resolver=_total_count, graphql_type=int, description="Counted only when selected."
    )
