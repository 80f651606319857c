"""Reading the viewer's orders while their session is looked up.

An authenticated request costs a round trip before its operation runs: the session of
its token is looked up (resolvers.accounts.start_authentication), to know the session is
not revoked and the user still active. `me { orders }`, a customer's account page, then
reads the orders: a second round trip, after the first.

The token's signature already makes its user id authentic (`Context.token_user_id`); what
the lookup adds is whether that user is signed in. So when a cached query document asks
for `me { orders(...) }`, the orders page is read at once, keyed by the token's user id,
while the session lookup runs: one round trip's wait instead of two. The rows are used
only once the lookup has made that user the viewer (`ReadAhead.settle`), primed into the
loader `me.orders` reads through (`CommerceLoaders.prime_orders_of`); for a revoked
session, an inactive user or anything else, they are dropped unread. The statement is the
loader's own, with the owner in its WHERE clause.

Only what the resolver would read with certainty is read ahead (PostgreSQL, where a
round trip is a network one): a document already in the cache (so valid), `orders` asked
under one response key of one `me` (one page, one statement), no `@skip` or `@include`
on either, arguments that coerce and make a window.
Anything else (bad variables, a bad cursor, `first` and `last`) is left to the resolver,
errors included; a read ahead that fails is logged and the resolver reads again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values

from models.db import Database
from models.orders import queries as q
from models.pagination import PageArgs, Window
from resolvers.context import Context
from schema.document_cache import remember, schema_store
from schema.lookahead import by_response_key, field_nodes, selected_names

__all__ = ["ReadAhead", "read_ahead"]

logger = logging.getLogger("shopql.graphql")

_MAX_REMEMBERED = 1024


@dataclass(frozen=True, slots=True)
class _Plan:
    """`me { orders }` in one operation: the field, its node and what its nodes select."""

    field: GraphQLField
    node: FieldNode
    selected: frozenset[str]


# Plans per operation node (`remember`), kept on the schema they were made with (they
# hold its fields).
_PLANS_ATTR = "_shopql_read_ahead_plans"


def _plan(schema: Any, document: DocumentNode, operation: OperationDefinitionNode) -> _Plan | None:
    if operation.operation is not OperationType.QUERY:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    me = by_response_key(list(field_nodes(operation.selection_set, fragments)), "me")
    asked = [  # the `orders` of each `me`, by response key
        nodes
        for me_nodes in me.values()
        for nodes in by_response_key(
            [node for m in me_nodes for node in field_nodes(m.selection_set, fragments)],
            "orders",
        ).values()
    ]
    if len(asked) != 1:
        return None
    (nodes,) = asked
    if any(node.directives for node in (*nodes, *(n for ms in me.values() for n in ms))):
        return None  # @skip or @include: maybe not read at all
    user = get_named_type(schema.query_type.fields["me"].type)
    if not isinstance(user, GraphQLObjectType):
        return None
    return _Plan(user.fields["orders"], nodes[0], selected_names(nodes, fragments))


def _plan_of(
    schema: Any, document: DocumentNode, operation: OperationDefinitionNode
) -> _Plan | None:
    return remember(
        schema_store(schema, _PLANS_ATTR),
        operation,
        lambda: _plan(schema, document, operation),
        _MAX_REMEMBERED,
    )


def _window(
    schema: Any, operation: OperationDefinitionNode, plan: _Plan, variables: Any
) -> Window | None:
    """The orders window the resolver will read, or None when its arguments do not
    coerce or make no window (the resolver answers those, errors included)."""
    if variables is not None and not isinstance(variables, dict):
        return None
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
    if not isinstance(coerced, VariableValues):  # errors: the request's own answer
        return None
    try:
        arguments = get_argument_values(plan.field, plan.node, coerced)
        args = PageArgs(
            first=arguments.get("first"),
            after=arguments.get("after"),
            last=arguments.get("last"),
            before=arguments.get("before"),
        )
        return q.order_window(args)
    except Exception:  # whatever it is, the resolver meets it again and reports it
        return None


async def _read(db: Database, user_id: int, window: Window, embed_lines: bool) -> list[Any] | None:
    try:
        async with db.read() as conn:
            rows = await q.orders_by_users(
                conn, user_ids=[user_id], window=window, embed_lines=embed_lines
            )
    except Exception:
        logger.warning("reading the viewer's orders ahead failed; read again", exc_info=True)
        return None
    return rows.get(user_id, [])


@dataclass(slots=True)
class ReadAhead:
    """An orders page being read for the token's user while their session is looked up."""

    user_id: int
    window: Window
    embed_lines: bool
    task: asyncio.Future[list[Any] | None]

    async def settle(self, context: Context) -> None:
        """Once the session lookup is over: the rows go to the loader if the token's user
        is the viewer, else nowhere."""
        rows = await self.task
        viewer = context.viewer
        if rows is not None and viewer is not None and viewer.id == self.user_id:
            context.commerce.prime_orders_of(
                self.user_id, self.window, rows, embed_lines=self.embed_lines
            )


def read_ahead(
    schema: Any,
    context: Context,
    query: str,
    variables: Any,
    operation_name: str | None,
) -> ReadAhead | None:
    """Start reading what `me { orders }` of the operation will read, if the request's
    session is still being looked up and the operation is one this module plans for."""
    user_id = context.token_user_id
    prepared = getattr(schema, "prepared", None)
    if (
        user_id is None
        or context.authenticating is None
        or prepared is None
        or context.db.dialect != "postgresql"
    ):
        return None
    found = prepared.cached_operation(schema, query, operation_name, peek=True)
    if found is None:
        return None
    document, operation = found
    graphql_schema = schema._schema
    plan = _plan_of(graphql_schema, document, operation)
    if plan is None:
        return None
    window = _window(graphql_schema, operation, plan, variables)
    if window is None:
        return None
    embed_lines = q.embeds_lines(context.db.dialect, plan.selected)
    task = asyncio.ensure_future(_read(context.db, user_id, window, embed_lines))
    return ReadAhead(user_id, window, embed_lines, task)
