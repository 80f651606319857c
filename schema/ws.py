"""GraphQL over WebSocket: the `graphql-transport-ws` protocol only, with shopql's sign-in,
message validation, per-connection cap, per-operation context and error codes.

`WebSocketSupport` is mixed into the GraphQL view (schema/http.py). What strawberry already
does is kept: the handshake's `Origin` must be one of SHOPQL_CORS_ORIGINS (or the server's
own origin; no Origin header, as sent by non-browser clients, is fine), else the handshake
is refused with HTTP 403; a client that offers only the legacy `graphql-ws` subprotocol is
closed with 4406. On top of that:

- `connection_init` signs the connection in from `payload.authorization`
  ("Bearer <accessToken>"); a malformed, invalid, expired or revoked token closes it with
  4403 Forbidden. Without one the connection is anonymous.
- A message that is not a well-formed protocol message (wrong types, missing fields)
  closes the connection with 4400 and the reason.
- At most SHOPQL_WS_MAX_SUBSCRIPTIONS operations run at once on one connection; one more
  `subscribe` gets an `error` message with code TOO_MANY_SUBSCRIPTIONS (the connection and
  its other subscriptions stay open).
- Each operation gets its own context (resolvers.subscriptions.operation_context): fresh
  loaders, and the sign-in checked again when it starts.
- Errors carry `extensions.code` as over HTTP, and unexpected ones are masked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    Message,
    NextMessagePayload,
    SubscribeMessage,
)
from strawberry.types import ExecutionResult
from strawberry.utils.aio import aclosing

from models.errors import Forbidden, InvalidInput, NotAuthenticated
from models.settings import Settings
from resolvers.context import Context
from resolvers.subscriptions import (
    ConnectionRefused,
    SubscriptionContext,
    WsConnection,
    open_connection,
    operation_context,
)
from schema.observability import request_id_for

logger = logging.getLogger("shopql.ws")

# A client sends connection_init right after the handshake; a socket that has not by then
# is closed with 4408.
CONNECTION_INIT_TIMEOUT = timedelta(seconds=10)
MAX_OPERATION_ID = 128
TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
MASKED_MESSAGE = "Internal server error"
_OPTIONAL_OBJECTS = ("variables", "extensions")


def message_problem(message: object) -> str | None:
    """Why a client message is not a well-formed graphql-transport-ws message, or None.
    (connection_init's payload is checked when it is handled.)"""
    if not isinstance(message, dict):
        return "WebSocket message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "Message `type` must be a string"
    if kind not in ("subscribe", "complete"):
        return None
    op_id = message.get("id")
    if not isinstance(op_id, str) or not 0 < len(op_id) <= MAX_OPERATION_ID:
        return f"Message `id` must be a string of 1 to {MAX_OPERATION_ID} characters"
    if kind == "complete":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "Subscribe `payload` must be an object"
    if not isinstance(payload.get("query"), str):
        return "Subscribe `payload.query` must be a string"
    for name in _OPTIONAL_OBJECTS:
        if not isinstance(payload.get(name), dict | None):
            return f"Subscribe `payload.{name}` must be an object or null"
    if not isinstance(payload.get("operationName"), str | None):
        return "Subscribe `payload.operationName` must be a string or null"
    return None


def format_ws_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    """One error as the client sees it, with `extensions.code` (as over HTTP). An error a
    subscription's event stream raised after it started reaches here without a path."""
    from schema.http import MASKED_MESSAGE as HTTP_MASKED
    from schema.http import format_error  # schema.http imports this module

    original = error.original_error
    if error.path is not None or original is None or isinstance(original, GraphQLError):
        return format_error(error, request_id)
    extensions: dict[str, Any]
    if isinstance(original, InvalidInput):
        extensions = {"code": "BAD_USER_INPUT"}
        if original.field:
            extensions["field"] = original.field
        return {"message": original.message, "extensions": extensions}
    if isinstance(original, NotAuthenticated):
        return {"message": original.message, "extensions": {"code": "UNAUTHENTICATED"}}
    if isinstance(original, Forbidden):
        return {"message": original.message, "extensions": {"code": "FORBIDDEN"}}
    logger.error("unexpected error in a subscription (request %s)", request_id, exc_info=original)
    return {
        "message": HTTP_MASKED,
        "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    }


class ShopOperation(Operation[Context, None]):
    """An operation whose errors are formatted like shopql's HTTP errors."""

    __slots__ = ()

    @property
    def request_id(self) -> str:
        handler = self.handler
        assert isinstance(handler, ShopTransportWSHandler)
        return handler.request_id

    async def send_initial_errors(self, errors: list[GraphQLError]) -> None:
        rid = self.request_id
        payload: Any = [format_ws_error(e, rid) for e in errors]
        await self.send_operation_message({"id": self.id, "type": "error", "payload": payload})

    async def send_next(self, execution_result: ExecutionResult) -> None:
        payload: NextMessagePayload = {"data": execution_result.data}
        if execution_result.errors:
            rid = self.request_id
            errors: Any = [format_ws_error(e, rid) for e in execution_result.errors]
            payload["errors"] = errors
        if execution_result.extensions:
            payload["extensions"] = execution_result.extensions
        await self.send_operation_message({"id": self.id, "type": "next", "payload": payload})


class ShopTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection: WsConnection | None = None
        settings: Settings = self.context.settings
        self.max_subscriptions_per_connection = settings.ws_max_subscriptions
        request = getattr(self.context, "request", None)
        scope = getattr(request, "scope", None)
        self.request_id = request_id_for(scope) if scope is not None else ""

    async def handle(self) -> None:
        try:
            await super().handle()
        except HTTPException:  # the view's decode_json refused a frame (not a JSON object)
            with suppress(Exception):
                await self.websocket.close(
                    code=4400, reason="WebSocket message must be a JSON object"
                )

    async def handle_message(self, message: Message) -> None:
        problem = message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self.connection_timed_out:
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            await self.websocket.close(code=4400, reason="Invalid connection init payload")
            return
        if self.connection_init_received:
            await self.websocket.close(code=4429, reason="Too many initialisation requests")
            return
        self.connection_init_received = True
        try:
            self.connection = await open_connection(self.context, payload)
        except ConnectionRefused as refused:
            logger.info("WebSocket sign-in refused: %s (request %s)", refused, self.request_id)
            await self.websocket.close(code=4403, reason="Forbidden")
            return
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged or self.connection is None:
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        op_id = message["id"]
        if op_id in self.operations:
            await self.websocket.close(code=4409, reason=f"Subscriber for {op_id} already exists")
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) >= limit:
            await self.send_message(
                {
                    "id": op_id,
                    "type": "error",
                    "payload": [
                        {
                            "message": f"this connection already runs {limit} operations "
                            "(SHOPQL_WS_MAX_SUBSCRIPTIONS): complete one first",
                            "extensions": {"code": TOO_MANY_SUBSCRIPTIONS},
                        }
                    ],
                }
            )
            return
        payload = message["payload"]
        operation = ShopOperation(
            self,
            op_id,
            payload["query"],
            payload.get("variables"),
            payload.get("operationName"),
        )
        operation.task = asyncio.create_task(self.run_operation(operation))
        operation.task.add_done_callback(self._task_done)
        self.operations[op_id] = operation

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """strawberry's, with a context of the operation's own."""
        try:
            assert self.connection is not None
            context: SubscriptionContext = await operation_context(self.context, self.connection)
            result_source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            await operation.send_operation_message(
                CompleteMessage(id=operation.id, type="complete")
            )
        except _OperationStreamClosed:
            return
        except WebSocketDisconnected:
            # The client went away while a result was on its way: nobody to tell, and
            # nothing failed on the server (the connection's teardown ends the rest).
            self.operations.pop(operation.id, None)
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise

    async def handle_task_exception(self, error: Exception) -> None:
        logger.error("WebSocket operation failed (request %s)", self.request_id, exc_info=error)


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends every message as a text frame, as the protocol requires (the view's
    encode_json gives bytes, which strawberry would send as binary frames)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        encoded = self.view.encode_json(message)
        text = encoded.decode() if isinstance(encoded, bytes) else encoded
        try:
            await self.ws.send_text(text)
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class WebSocketSupport:
    """Mixed into the GraphQL view: `graphql-transport-ws` with the handler above."""

    graphql_transport_ws_handler_class: Any = ShopTransportWSHandler
    websocket_adapter_class: Any = TextWebSocketAdapter
    protocols: Sequence[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # strawberry's view sets these in its __init__; the legacy `graphql-ws` is refused.
        self.protocols = (GRAPHQL_TRANSPORT_WS_PROTOCOL,)
        self.connection_init_wait_timeout = CONNECTION_INIT_TIMEOUT
