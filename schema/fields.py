"""Field constructors shared by every domain's types: computed fields (sync resolvers that
may hand back a DataLoader future instead of a coroutine), global IDs, money."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import strawberry

from models.money import Money, money
from resolvers import ids
from schema.execution import mark_loaded, mark_records


def computed(resolver: Any, graphql_type: Any, **kw: Any) -> Any:
    """A field computed by `resolver`, typed `graphql_type` in the schema."""
    return strawberry.field(resolver=resolver, graphql_type=graphql_type, **kw)


def global_id(type_name: str) -> Any:
    """The `id: ID!` of a Node: the opaque global ID of the record's `id`."""

    def resolve(root: strawberry.Parent[Any]) -> strawberry.ID:
        return strawberry.ID(ids.encode(type_name, root.id))

    return computed(resolve, strawberry.ID)


def enum_of(attr: str, enum_type: type[Enum]) -> Any:
    """An enum field from the record's stored value: the member from the enum's own value
    map (calling the enum costs seven times as much); a value that is no member raises
    as the call does."""
    members = enum_type._value2member_map_

    def resolve(root: strawberry.Parent[Any]) -> Any:
        value = getattr(root, attr)
        member = members.get(value)
        return enum_type(value) if member is None else member

    return computed(resolve, enum_type)


def money_of(attr: str, graphql_type: Any) -> Any:
    """A Money field from a minor-units attribute and the record's `currency`."""

    def resolve(root: strawberry.Parent[Any]) -> Money:
        return money(getattr(root, attr), root.currency)

    return computed(resolve, graphql_type)


def loaded(loader: Callable[[Any], Any], key: str, graphql_type: Any, **kw: Any) -> Any:
    """A related object loaded by `loader(context)` with the record's `key` attribute (null
    when the key is null). Sync: it hands back the DataLoader's future, no coroutine."""

    def resolve(root: strawberry.Parent[Any], info: strawberry.Info) -> Any:
        value = getattr(root, key)
        return None if value is None else loader(info.context).load(value)

    mark_loaded(resolve, loader, key)  # the executor may call the loader directly
    return computed(resolve, graphql_type, **kw)


def records_of(record_type: type) -> Any:
    """A Node type's `is_type_of` classmethod: its objects are the `record_type` records
    (the Node interface resolves types by it). Marked, so the executor may test
    `isinstance(obj, record_type)` itself, without building a ResolveInfo to call it."""

    def is_type_of(cls: type, obj: Any, _info: Any) -> bool:
        return isinstance(obj, record_type)

    mark_records(is_type_of, record_type)
    return classmethod(is_type_of)
