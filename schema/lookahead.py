"""Look-ahead: which of an object's fields a query selects below the field being resolved.

A root or connection resolver that fetches a page of products can fetch the relations the
query will ask of each product in the same statement (models.catalog.queries, "embedded
relations") when it knows which ones are selected. `selected_fields` answers that from the
field's AST: every field name selected on the objects (directly, or through
`connection { nodes { ... } }` / `connection { edges { node { ... } } }`), through inline
fragments and fragment spreads whatever their type condition, and whatever their
`@skip` / `@include` (a superset: fetching a relation nobody reads costs time, never a
wrong answer).

Answers are remembered per field node (the document cache hands out the same parsed
documents, so a repeated query is one dictionary lookup).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)

__all__ = ["selected_fields"]

_MAX_REMEMBERED = 1024
# id(field node) -> (the node, connection?, the names): the node is kept so its id is not
# reused while the answer is remembered.
_REMEMBERED: dict[tuple[int, bool], tuple[FieldNode, frozenset[str]]] = {}


def _fields(
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> Iterator[FieldNode]:
    """The field nodes of a selection set, fragments flattened (each spread once per path)."""
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                yield from _fields(fragment.selection_set, fragments, seen | {name})


def _names(
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    connection: bool,
) -> frozenset[str]:
    names: set[str] = set()
    for field_node in field_nodes:
        if not connection:
            names.update(f.name.value for f in _fields(field_node.selection_set, fragments))
            continue
        for part in _fields(field_node.selection_set, fragments):
            if part.name.value == "nodes":
                names.update(f.name.value for f in _fields(part.selection_set, fragments))
            elif part.name.value == "edges":
                for edge in _fields(part.selection_set, fragments):
                    if edge.name.value == "node":
                        names.update(f.name.value for f in _fields(edge.selection_set, fragments))
    return frozenset(names)


def selected_fields(info: Any, *, connection: bool = False) -> frozenset[str]:
    """Names of the fields selected on the field's value (`connection`: on its nodes).

    `info` is strawberry's Info or graphql-core's GraphQLResolveInfo."""
    raw = getattr(info, "_raw_info", info)
    field_nodes: list[FieldNode] = raw.field_nodes
    first = field_nodes[0]
    key = (id(first), connection)
    remembered = _REMEMBERED.get(key)
    if remembered is not None and remembered[0] is first and len(field_nodes) == 1:
        return remembered[1]
    names = _names(field_nodes, raw.fragments, connection)
    if len(field_nodes) == 1:  # merged fields of one response key differ per operation
        if len(_REMEMBERED) >= _MAX_REMEMBERED:
            _REMEMBERED.clear()
        _REMEMBERED[key] = (first, names)
    return names
