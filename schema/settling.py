"""An execution context that answers only after all of a request's work has finished.

When an error bubbles up through a non-null field (say `nodes(ids:)` with a malformed ID
nulls the whole `data`), graphql-core 3.3 stops waiting for the sibling fields still
running and settles them "in the background". Those siblings hold database connections:
left running after the response, they outlive the request (connections reclaimed by the
garbage collector, or cut off when the server shuts down). Waiting for them before
answering keeps every connection's lifetime inside its request; the wait is only ever
paid on such error paths.
"""

from __future__ import annotations

from asyncio import wait
from typing import Any

from graphql.pyutils import AwaitableOrValue
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class SettlingExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        result = super().execute_operation(serially)
        if not self.is_awaitable(result) and not self.background_futures:
            return result

        async def settled() -> Any:
            value = await result if self.is_awaitable(result) else result
            while self.background_futures:
                await wait(list(self.background_futures))
            return value

        return settled()
