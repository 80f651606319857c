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

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
)
from graphql.execution.values import VariableValues, get_argument_values

__all__ = [
    "Nested",
    "by_response_key",
    "field_nodes",
    "nested_fields",
    "selected_fields",
    "selected_names",
]

_MAX_REMEMBERED = 1024
# id(field node) -> (the node, connection?, the names): the node is kept so its id is not
# reused while the answer is remembered.
_REMEMBERED: dict[tuple[int, bool], tuple[FieldNode, frozenset[str]]] = {}


def field_nodes(
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
            yield from field_nodes(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                yield from field_nodes(fragment.selection_set, fragments, seen | {name})


def by_response_key(nodes: Iterable[FieldNode], name: str) -> dict[str, list[FieldNode]]:
    """The nodes of field `name` among `nodes`, by response key (alias, else name)."""
    found: dict[str, list[FieldNode]] = {}
    for node in nodes:
        if node.name.value == name:
            key = node.alias.value if node.alias is not None else name
            found.setdefault(key, []).append(node)
    return found


def _names(
    nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    connection: bool,
) -> frozenset[str]:
    names: set[str] = set()
    for field_node in nodes:
        if not connection:
            names.update(f.name.value for f in field_nodes(field_node.selection_set, fragments))
            continue
        for part in field_nodes(field_node.selection_set, fragments):
            if part.name.value == "nodes":
                names.update(f.name.value for f in field_nodes(part.selection_set, fragments))
            elif part.name.value == "edges":
                for edge in field_nodes(part.selection_set, fragments):
                    if edge.name.value == "node":
                        names.update(
                            f.name.value for f in field_nodes(edge.selection_set, fragments)
                        )
    return frozenset(names)


def selected_names(
    nodes: list[FieldNode], fragments: Mapping[str, FragmentDefinitionNode]
) -> frozenset[str]:
    """What `selected_fields(info, connection=True)` answers for a connection field whose
    merged nodes are `nodes`, from the document alone."""
    return _names(nodes, fragments, True)


def selected_fields(info: Any, *, connection: bool = False) -> frozenset[str]:
    """Names of the fields selected on the field's value (`connection`: on its nodes).

    `info` is strawberry's Info or graphql-core's GraphQLResolveInfo."""
    raw = getattr(info, "_raw_info", info)
    nodes: list[FieldNode] = raw.field_nodes
    first = nodes[0]
    key = (id(first), connection)
    remembered = _REMEMBERED.get(key)
    if remembered is not None and remembered[0] is first and len(nodes) == 1:
        return remembered[1]
    names = _names(nodes, raw.fragments, connection)
    if len(nodes) == 1:  # merged fields of one response key differ per operation
        if len(_REMEMBERED) >= _MAX_REMEMBERED:
            _REMEMBERED.clear()
        _REMEMBERED[key] = (first, names)
    return names


@dataclass(frozen=True, slots=True)
class Nested:
    """A field selected below the field being resolved: its argument values (GraphQL
    names, coerced as the executor will coerce them) and, for a connection, the names
    selected on its nodes."""

    arguments: dict[str, Any]
    selected: frozenset[str]


def nested_fields(info: Any, names: frozenset[str]) -> dict[str, Nested]:
    """The fields named in `names` selected on the field's value, each under one response
    key only (a field asked for under two aliases, or with arguments that do not coerce,
    is left out: its own resolver answers it, errors included). Whatever `@skip` or
    `@include` say (a superset, as `selected_fields`)."""
    raw = getattr(info, "_raw_info", info)
    parent = get_named_type(raw.return_type)
    if not isinstance(parent, GraphQLObjectType):
        return {}
    below = [
        node
        for field_node in raw.field_nodes
        for node in field_nodes(field_node.selection_set, raw.fragments)
    ]
    variables = raw.variable_values
    if not isinstance(variables, VariableValues):  # strawberry's info: the coerced values
        variables = VariableValues(sources={}, coerced=variables)
    nested: dict[str, Nested] = {}
    for name in names:
        by_key = by_response_key(below, name)
        if len(by_key) != 1:
            continue
        (nodes,) = by_key.values()
        try:
            arguments = get_argument_values(parent.fields[name], nodes[0], variables)
        except GraphQLError:
            continue
        nested[name] = Nested(arguments, _names(nodes, raw.fragments, True))
    return nested
