"""Known documents run straight on the executor.

strawberry's `Schema.execute` wraps every operation in its extension machinery: an
execution context, the extensions (built per request), their parse, validate and execute
hooks as async context managers, then the result converted and the extensions' results
gathered. For a document the cache (schema.document_cache) already holds, every one of
those hooks does nothing but the limits extension's cost check: the document was parsed,
validated and checked against the depth, alias and token limits when it entered the
cache, with the same rules. That wrapper was about a tenth of a cached request's CPU.

`PreparedOperations.run` answers such a request itself: the operation is picked as
strawberry picks it, the cost is checked and charged exactly as `QueryLimitsExtension`
does (schema.limits), and graphql-core runs it with the schema's execution context
class. Whatever it does not handle the same way (a document not in the cache, an
operation it cannot pick unambiguously, an operation type the transport refuses, a
cost over the limit) it leaves to strawberry by answering None, so every error keeps
its one path.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from graphql import (
    DocumentNode,
    GraphQLError,
    OperationDefinitionNode,
    execute,
    get_operation_ast,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.execution import optimized_is_awaitable
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from models.settings import QueryLimits
from schema.document_cache import DocumentStore
from schema.limits import cached_operation_cost, charge_cost
from schema.transport import NoIntrospectionExtension, NoIntrospectionRule

_OPERATION_TYPES = {operation.value: operation for operation in OperationType}


class PreparedOperations:
    """`extensions`: the schema's extensions when built. The server may add one that
    refuses introspection (schema.transport), which adds its rule to the validation
    rules: the key its documents are cached under. With any other extension list the
    hooks might do something here unaccounted for, so nothing runs here."""

    def __init__(
        self,
        store: DocumentStore,
        rules: tuple[Any, ...],
        limits: QueryLimits,
        extensions: Sequence[Any],
    ) -> None:
        self.store = store
        self.limits = limits
        self._keys = {
            tuple(extensions): rules,
            (*extensions, NoIntrospectionExtension): (*rules, NoIntrospectionRule),
        }
        self.served = 0  # operations answered here (tests, metrics of the cache)

    def cached_operation(
        self, schema: Any, query: str, operation_name: str | None, *, peek: bool = False
    ) -> tuple[DocumentNode, OperationDefinitionNode] | None:
        """The cached document of `query` (parsed and validated with the rules the
        schema's extensions run with) and the operation the request picks, or None: not
        cached, or several operations and no name (a request error), or an unknown name.
        `peek`: a look ahead of the request's own, not counted as a cache hit."""
        # The rules the extensions run with (the cache's key), from their list as it is
        # now: an extension added after start-up counts at once.
        rules = self._keys.get(tuple(schema.extensions))
        if rules is None:
            return None
        document = (self.store.peek if peek else self.store.get)(query, rules)
        if document is None:
            return None
        operation = get_operation_ast(document, operation_name)
        return None if operation is None else (document, operation)

    async def run(
        self,
        schema: Any,
        query: str,
        variables: dict[str, Any] | None,
        context: Any,
        root_value: Any,
        operation_name: str | None,
        allowed: Collection[OperationType],
        operation_extensions: dict[str, Any] | None,
    ) -> ExecutionResult | None:
        found = self.cached_operation(schema, query, operation_name)
        if found is None:
            return None
        document, operation = found
        if _OPERATION_TYPES[operation.operation.value] not in allowed:
            return None
        graphql_schema = schema._schema
        cost = cached_operation_cost(graphql_schema, document, operation, variables)
        if cost > self.limits.max_cost:
            return None
        self.served += 1
        try:
            await charge_cost(cost, operation)
        except GraphQLError as error:  # RATE_LIMITED, as the limits extension raises it
            return ExecutionResult(data=None, errors=[error], extensions={})
        result = execute(
            graphql_schema,
            document,
            root_value=root_value,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=schema.execution_context_class,
            operation_extensions=operation_extensions,
        )
        done = cast(
            "GraphQLExecutionResult",
            await result if optimized_is_awaitable(result) else result,  # type: ignore[misc]
        )
        return ExecutionResult(data=done.data, errors=done.errors, extensions={})
