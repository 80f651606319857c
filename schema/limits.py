"""Abuse limits, checked before an operation runs: document size (tokens), depth, aliases
and cost.

One `SchemaExtension` per request adds them without any per-field hook:

- tokens: graphql-core's parser stops at `max_tokens` (`parse(..., max_tokens=)`), so an
  oversized document is never built (`TOO_MANY_TOKENS`); a text longer than the limit is
  first counted by one regular expression (`count_tokens`, the parser's count), so a
  flood of huge documents is refused without being lexed token by token;
- depth and aliases are checked on their own before the other validation rules: a
  document over them is refused without the full validation walk;
- depth and aliases: graphql-core validation rules, counted through named and inline
  fragments (a fragment spread counts every time it is used), so fragments cannot hide
  either (`QUERY_TOO_DEEP`, `TOO_MANY_ALIASES`); introspection lists are bounded by
  graphql-core's `MaxIntrospectionDepthRule` instead, so GraphiQL's introspection query
  (whose `ofType` chain is deep but cannot fan out) passes;
- cost: needs the variable values (`first: $n`), which validation rules never see, so it
  is computed once the document is valid, right before execution (`QUERY_TOO_COMPLEX`).

Cost model: a scalar or enum field costs 0, an object field 1 plus its selections (a list
of objects counts as one object), a connection field (an object type named `...Connection`
with a `first` argument) `n` times the cost of one item (`nodes { ... }`, or
`edges { node { ... } }`: an edge and its node are one object) plus its other selections
once (`pageInfo` 1, `totalCount` 0), where `n` is `first`, else `last`, else the default
page size 20, at most 100. A mutation root field costs 10 plus its payload's selections.
Introspection fields cost 0. Each error carries `extensions.code` and the measured value
against the limit, e.g. `extensions.cost = {"requested": 1020, "limit": 1000}`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)
from graphql.language import SKIP, DocumentNode, VisitorAction
from graphql.utilities import TypeInfo, get_operation_ast
from graphql.validation import ASTValidationRule, ValidationContext, specified_rules
from graphql.validation.rules.max_introspection_depth_rule import MaxIntrospectionDepthRule
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from models import telemetry
from models.ratelimit import RateLimiter, RecentRefusals
from models.settings import QueryLimits
from schema.document_cache import schema_store

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MUTATION_COST = 10
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
_TOKENS_ABORT = "tokens. Parsing aborted."
# The lexical tokens graphql-core's parser counts against `max_tokens`: block strings,
# strings, comments, spreads, punctuators, numbers and names (commas and white space are
# ignored).
_TOKEN = re.compile(
    r'"""(?:\\"""|(?!""").)*?"""|"(?:\\.|[^"\\\n\r])*"|#[^\n\r]*|\.\.\.'
    r"|[!$&()\:=@\[\]{}|]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[_A-Za-z][_0-9A-Za-z]*",
    re.S,
)


def count_tokens(document: str) -> int:
    """The tokens of a valid document as the parser counts them, by one regular
    expression (C speed, ~20x faster than lexing): an oversized flood is refused before
    graphql-core lexes it token by token."""
    return len(_TOKEN.findall(document))


__all__ = ["CostCharge", "QueryLimits", "QueryLimitsExtension", "cost_charge", "operation_cost"]


REFUSED_OPERATION_COST = 10  # an operation refused before it ran (parse, limits, ...)
TARPIT_SECONDS = 1.0  # the pause before refusing a client back before its Retry-After


@dataclass(frozen=True)
class CostCharge:
    """The rate-limit bucket an HTTP request's operations are charged to (schema/http.py
    sets it per request): each operation's cost, at least 1 point, before it runs; an
    operation refused before it ran, REFUSED_OPERATION_COST points afterwards."""

    limiter: RateLimiter
    key: str
    refusals: RecentRefusals

    async def refuse_early(self) -> ExecutionResult | None:
        """The answer to a client back before its Retry-After: refused without parsing,
        after a pause (a flooding client's connections wait instead of being served);
        None when the client may try."""
        wait = self.refusals.remaining(self.key)
        if wait <= 0:
            return None
        pause = min(wait, TARPIT_SECONDS)
        await asyncio.sleep(pause)
        telemetry.rate_limited("graphql")
        retry_after = max(1, math.ceil(wait - pause))
        message = f"Rate limit exceeded: retry in {retry_after} s."
        return ExecutionResult(data=None, errors=[_rate_limited(message, retry_after)])

    async def settle(self, result: ExecutionResult) -> None:
        """After the operation: remember a RATE_LIMITED answer until its Retry-After, and
        charge an operation refused before it ran."""
        for error in result.errors or ():
            extensions = error.extensions or {}
            if extensions.get("code") == "RATE_LIMITED":
                self.refusals.refuse(self.key, extensions["retryAfter"])
                return
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            decision = await self.limiter.hit(self.key, REFUSED_OPERATION_COST)
            if not decision.allowed:
                self.refusals.refuse(self.key, decision.retry_after)


def _rate_limited(message: str, retry_after: int, node: Any = None) -> GraphQLError:
    return GraphQLError(
        message, node, extensions={"code": "RATE_LIMITED", "retryAfter": retry_after}
    )


cost_charge: ContextVar[CostCharge | None] = ContextVar("shopql_cost_charge", default=None)


def _limit_error(
    message: str, code: str, key: str, requested: int, limit: int, nodes: Any = None
) -> GraphQLError:
    return GraphQLError(
        message,
        nodes,
        extensions={"code": code, key: {"requested": requested, "limit": limit}},
    )


class _FragmentWalk(ASTValidationRule):
    """Checks each operation once on entering the document, then skips the rest of the
    tree (no per-node cost). Fragment results are memoized; a fragment cycle counts as 0
    here and is refused by graphql-core's `NoFragmentCyclesRule`."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self._memo: dict[str, int] = {}
        self._entered: set[str] = set()

    def measure(self, selection_set: SelectionSetNode) -> int:
        raise NotImplementedError

    def fragment(self, name: str) -> int:
        if name in self._memo:
            return self._memo[name]
        fragment = self.context.get_fragment(name)
        if fragment is None or name in self._entered:
            return 0  # unknown fragments and cycles are other rules' errors
        self._entered.add(name)
        try:
            value = self.measure(fragment.selection_set)
        finally:
            self._entered.discard(name)
        self._memo[name] = value
        return value

    def check(self, operation: OperationDefinitionNode, value: int) -> None:
        raise NotImplementedError

    def enter_document(self, node: DocumentNode, *_args: Any) -> VisitorAction:
        for definition in node.definitions:
            if isinstance(definition, OperationDefinitionNode):
                try:
                    value = self.measure(definition.selection_set)
                except RecursionError:  # a fragment chain too long to follow
                    value = 1 << 30
                self.check(definition, value)
        return SKIP


class DepthLimitRule(_FragmentWalk):
    max_depth: ClassVar[int] = QueryLimits.max_depth

    def measure(self, selection_set: SelectionSetNode) -> int:
        deepest = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value in INTROSPECTION_ROOTS:
                    continue  # MaxIntrospectionDepthRule bounds introspection
                depth = 1
                if selection.selection_set is not None:
                    depth += self.measure(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                depth = self.measure(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                depth = self.fragment(selection.name.value)
            else:  # pragma: no cover
                continue
            deepest = max(deepest, depth)
        return deepest

    def check(self, operation: OperationDefinitionNode, value: int) -> None:
        if value > self.max_depth:
            self.report_error(
                _limit_error(
                    f"The operation is nested {value} fields deep; the limit is {self.max_depth}.",
                    "QUERY_TOO_DEEP",
                    "depth",
                    value,
                    self.max_depth,
                    operation,
                )
            )


class AliasLimitRule(_FragmentWalk):
    max_aliases: ClassVar[int] = QueryLimits.max_aliases

    def measure(self, selection_set: SelectionSetNode) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    total += 1
                if selection.selection_set is not None:
                    total += self.measure(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                total += self.measure(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def check(self, operation: OperationDefinitionNode, value: int) -> None:
        if value > self.max_aliases:
            self.report_error(
                _limit_error(
                    f"The operation uses {value} aliases; the limit is {self.max_aliases}.",
                    "TOO_MANY_ALIASES",
                    "aliases",
                    value,
                    self.max_aliases,
                    operation,
                )
            )


class IntrospectionDepthRule(MaxIntrospectionDepthRule):
    """graphql-core's bound on nested introspection lists, with shopql's error code."""

    def report_error(self, error: GraphQLError) -> None:
        super().report_error(
            GraphQLError(error.message, error.nodes, extensions={"code": "QUERY_TOO_DEEP"})
        )


def validation_rules(
    limits: QueryLimits, base: Sequence[type[ASTValidationRule]] = specified_rules
) -> tuple[type[ASTValidationRule], ...]:
    """`base` (graphql-core's rules by default) with the depth and alias limits, and
    graphql-core's introspection-depth rule swapped for the one with an error code."""
    rules = [IntrospectionDepthRule if r is MaxIntrospectionDepthRule else r for r in base]
    if IntrospectionDepthRule not in rules:
        rules.append(IntrospectionDepthRule)
    return (*rules, *limit_rules(limits))


def limit_rules(limits: QueryLimits) -> tuple[type[_FragmentWalk], ...]:
    depth = type("DepthLimitRule", (DepthLimitRule,), {"max_depth": limits.max_depth})
    aliases = type("AliasLimitRule", (AliasLimitRule,), {"max_aliases": limits.max_aliases})
    return depth, aliases


def limit_errors(
    schema: GraphQLSchema, document: DocumentNode, rules: Sequence[type[_FragmentWalk]]
) -> list[GraphQLError]:
    """The depth and alias limits alone, without graphql-core's walk of the whole
    document (each rule measures the document on entering it)."""
    errors: list[GraphQLError] = []
    context = ValidationContext(schema, document, TypeInfo(schema), errors.append)
    for rule in rules:
        rule(context).enter_document(document)
    return errors


class _Cost:
    """The cost of one operation for given variable values (the document is valid)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.memo: dict[str, int] = {}
        self.entered: set[str] = set()
        self.read: set[str] = set()  # the variables the cost depends on

    def selections(self, selection_set: SelectionSetNode | None, parent: Any) -> int:
        if selection_set is None:
            return 0
        return sum(self.selection(selection, parent) for selection in selection_set.selections)

    def selection(self, selection: SelectionNode, parent: Any) -> int:
        if isinstance(selection, FieldNode):
            return self.field(selection, parent)
        if isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            target = self.schema.get_type(condition.name.value) if condition else parent
            return self.selections(selection.selection_set, target)
        if isinstance(selection, FragmentSpreadNode):
            return self.fragment(selection.name.value)
        return 0  # pragma: no cover

    def fragment(self, name: str) -> int:
        if name not in self.memo:
            fragment = self.fragments.get(name)
            if fragment is None:
                return 0
            self.memo[name] = 0  # a cycle (refused by validation) adds nothing
            target = self.schema.get_type(fragment.type_condition.name.value)
            self.memo[name] = self.selections(fragment.selection_set, target)
        return self.memo[name]

    def field(self, node: FieldNode, parent: Any) -> int:
        name = node.name.value
        if name.startswith("__") or node.selection_set is None:
            return 0  # introspection, __typename, scalars and enums
        definition = self._definition(parent, name)
        if definition is None:
            return 0
        named = get_named_type(definition.type)
        if not self._is_connection(named, definition):
            return 1 + self.selections(node.selection_set, named)
        return self.connection(node.selection_set, named, self.page_size(node))

    def connection(self, selection_set: SelectionSetNode, parent: Any, items: int) -> int:
        """A connection's selections: `edges` and `nodes` once per item (an edge and its
        node are one object), the others (`pageInfo`, `totalCount`) once; through
        fragments, so wrapping `nodes` in one changes nothing."""
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name == "edges" and selection.selection_set is not None:
                    edge = self._definition(parent, name)
                    edge_type = get_named_type(edge.type) if edge else None
                    total += items * self.selections(selection.selection_set, edge_type)
                elif name == "nodes":
                    total += items * self.field(selection, parent)
                else:
                    total += self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                total += self.connection(selection.selection_set, parent, items)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None and selection.name.value not in self.entered:
                    self.entered.add(selection.name.value)
                    total += self.connection(fragment.selection_set, parent, items)
                    self.entered.discard(selection.name.value)
        return total

    def root_fields(self, selection_set: SelectionSetNode) -> Iterator[FieldNode]:
        """The root fields of an operation, through fragments."""
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                yield from self.root_fields(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    yield from self.root_fields(fragment.selection_set)

    def mutation_field(self, node: FieldNode, root: GraphQLObjectType) -> int:
        if node.name.value.startswith("__"):
            return 0
        definition = root.fields.get(node.name.value)
        named = get_named_type(definition.type) if definition else None
        return MUTATION_COST + self.selections(node.selection_set, named)

    @staticmethod
    def _definition(parent: Any, name: str) -> GraphQLField | None:
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return parent.fields.get(name)
        return None

    @staticmethod
    def _is_connection(named: GraphQLNamedType, definition: GraphQLField) -> bool:
        return (
            isinstance(named, GraphQLObjectType)
            and named.name.endswith("Connection")
            and "first" in definition.args
        )

    def page_size(self, node: FieldNode) -> int:
        arguments = {argument.name.value: argument.value for argument in node.arguments or ()}
        for name in ("first", "last"):
            value_node = arguments.get(name)
            if value_node is None or isinstance(value_node, NullValueNode):
                continue
            value: Any = None
            if isinstance(value_node, IntValueNode):
                value = int(value_node.value)
            elif isinstance(value_node, VariableNode):
                self.read.add(value_node.name.value)
                value = self.variables.get(value_node.name.value)
            if isinstance(value, int) and not isinstance(value, bool):
                return min(max(value, 0), MAX_PAGE_SIZE)
        return DEFAULT_PAGE_SIZE


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """The cost of `operation` (of a valid `document`) with these variable values
    (defaults from the operation's variable definitions fill the gaps)."""
    return _operation_cost(schema, document, operation, variables)[0]


def _operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> tuple[int, tuple[str, ...]]:
    """(cost, the names of the variables it depends on, sorted)."""
    values: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None:
            values[definition.variable.name.value] = value_from_ast_untyped(
                definition.default_value
            )
    values.update(variables or {})
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    cost = _Cost(schema, fragments, values)
    root = schema.get_root_type(operation.operation)
    if root is None:
        total = 0
    elif operation.operation is OperationType.MUTATION:
        fields = cost.root_fields(operation.selection_set)
        total = sum(cost.mutation_field(field, root) for field in fields)
    else:
        total = cost.selections(operation.selection_set, root)
    return total, tuple(sorted(cost.read))


# Costs of operations of cached documents (schema.document_cache hands out the same
# parsed document for the same text), kept on the schema they were computed with (they go
# with it, rather than keeping every schema built in a process alive):
# id(operation) -> (operation, the variables the cost depends on, {their values: cost}).
# Bounded: it starts over when full.
_Costs = tuple[OperationDefinitionNode, tuple[str, ...], dict[tuple[Any, ...], int]]
_COSTS_ATTR = "_shopql_costs"
_MAX_COSTS = 2000
_MAX_COSTS_PER_OPERATION = 64
_KEY_TYPES = (int, str, float, bool, type(None))


def cached_operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> int:
    """`operation_cost`, remembered per operation node and the values of the variables
    it depends on (page sizes): walking the selections was 3-5% of a cached request."""
    remembered: dict[int, _Costs] = schema_store(schema, _COSTS_ATTR)
    entry = remembered.get(id(operation))
    cost: int | None = None
    if entry is None or entry[0] is not operation:
        cost, names = _operation_cost(schema, document, operation, variables)
        if len(remembered) >= _MAX_COSTS:
            remembered.clear()
        entry = remembered[id(operation)] = (operation, names, {})
    key = _cost_key(variables or {}, entry[1])
    if key is None:  # not remembered
        return cost if cost is not None else operation_cost(schema, document, operation, variables)
    costs = entry[2]
    if cost is None:
        cost = costs.get(key)
        if cost is not None:
            return cost
        cost = operation_cost(schema, document, operation, variables)
    if len(costs) >= _MAX_COSTS_PER_OPERATION:
        costs.clear()
    costs[key] = cost
    return cost


def _cost_key(given: Mapping[str, Any], names: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The values of `names` (typed: True and 1 are different keys), or None when one is
    not a plain scalar (such a request is not remembered)."""
    key = []
    for name in names:
        value = given.get(name, _UNSET)
        if value is not _UNSET and type(value) not in _KEY_TYPES:
            return None
        key.append((type(value), value))
    return tuple(key)


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


async def charge_cost(cost: int, operation: OperationDefinitionNode) -> None:
    """Charge an operation's cost to this request's rate-limit bucket, if any."""
    charge = cost_charge.get()
    if charge is not None:
        await _charge(charge, max(cost, 1), operation)


class QueryLimitsExtension(SchemaExtension):
    """Adds the limits to every operation: parser option, validation rules, cost check.
    Built once per request by strawberry from `QueryLimitsExtension.factory(limits)`."""

    def __init__(
        self,
        limits: QueryLimits,
        rules: tuple[type[ASTValidationRule], ...],
        checks: tuple[type[_FragmentWalk], ...] | None = None,
    ) -> None:
        self.limits = limits
        self.rules = rules
        self.limit_rules = checks or limit_rules(limits)

    @classmethod
    def factory(
        cls, limits: QueryLimits, rules: tuple[type[ASTValidationRule], ...] | None = None
    ) -> Any:
        """`rules`: the validation rules with these limits (`validation_rules(limits)`),
        when the caller keeps them too (schema.prepared looks documents up by them)."""
        rules, checks = rules or validation_rules(limits), limit_rules(limits)
        return lambda: cls(limits, rules, checks)

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        max_tokens = self.limits.max_tokens
        query = context.query
        # A document shorter than the limit in characters cannot exceed it in tokens.
        if query is not None and len(query) > max_tokens and count_tokens(query) > max_tokens:
            raise GraphQLError(
                f"Syntax Error: Document contains more than {max_tokens} tokens. Parsing aborted.",
                extensions={"code": "TOO_MANY_TOKENS", "tokens": {"limit": max_tokens}},
            )
        context.parse_options["max_tokens"] = max_tokens
        if context.validation_rules is specified_rules:
            context.validation_rules = self.rules  # computed once per schema
        else:
            context.validation_rules = validation_rules(self.limits, context.validation_rules)
        yield

    def on_validate(self) -> Iterator[None]:
        """The depth and alias limits first, on their own: a document over them is
        refused without running every other validation rule over it."""
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            errors = limit_errors(context.schema._schema, document, self.limit_rules)
            if errors:
                context.pre_execution_errors = errors
        yield

    def on_parse(self) -> Iterator[None]:
        yield
        context = self.execution_context
        document = context.graphql_document
        if (
            document is not None
            and context.pre_execution_errors is None
            and context._provided_operation_name is None
            and sum(isinstance(d, OperationDefinitionNode) for d in document.definitions) > 1
        ):
            # GraphQL over HTTP: a request error (strawberry would run the first one).
            context.pre_execution_errors = [
                GraphQLError(
                    "The document has several operations: say which to run in operationName"
                )
            ]
        for error in context.pre_execution_errors or ():
            if isinstance(error, GraphQLSyntaxError) and error.message.endswith(_TOKENS_ABORT):
                error.extensions = {
                    "code": "TOO_MANY_TOKENS",
                    "tokens": {"limit": self.limits.max_tokens},
                }

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            operation = get_operation_ast(document, context.operation_name)
            if operation is not None:
                schema = context.schema._schema
                requested = cached_operation_cost(schema, document, operation, context.variables)
                if requested > self.limits.max_cost:
                    raise _limit_error(
                        f"The operation's cost is {requested}; the limit is "
                        f"{self.limits.max_cost}. Ask for fewer items (first/last) or "
                        "fewer nested connections.",
                        "QUERY_TOO_COMPLEX",
                        "cost",
                        requested,
                        self.limits.max_cost,
                        operation,
                    )
                await charge_cost(requested, operation)
        yield


async def _charge(charge: CostCharge, points: int, operation: OperationDefinitionNode) -> None:
    """Pour the operation's cost into the client's bucket, or refuse it (RATE_LIMITED,
    `extensions.retryAfter` in seconds; schema/http.py answers 429 with Retry-After)."""
    decision = await charge.limiter.hit(charge.key, points)
    if not decision.allowed:
        telemetry.rate_limited("graphql")
        message = (
            f"Rate limit exceeded: this operation costs {points} points; retry in "
            f"{decision.retry_after} s."
        )
        raise _rate_limited(message, decision.retry_after, operation)
