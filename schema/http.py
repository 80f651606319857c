"""GraphQL over HTTP (and WebSocket): strawberry's ASGI view with shopql's context,
error codes, masking and debug extensions."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from models.db import Database, track_sql
from models.errors import Forbidden, InvalidInput, NotAuthenticated
from models.settings import Settings
from resolvers.accounts import authenticate
from resolvers.context import Context, Services

logger = logging.getLogger("shopql.graphql")

MASKED_MESSAGE = "Internal server error"
# graphql-core's messages for a variable *value* the client sent that does not fit (the
# document is fine: BAD_USER_INPUT); other "Variable '$x' ..." messages are about the
# document itself (GRAPHQL_VALIDATION_FAILED).
_BAD_VARIABLE_VALUE = re.compile(
    r"Variable '\$[^']*' (got invalid value|has invalid value|of required type .* was not "
    r"provided|of non-null type .* must not be null)",
    re.S,
)
MAX_REQUEST_ID = 128


def request_id_of(request: Request | WebSocket) -> str:
    given = request.headers.get("x-request-id", "")
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable() and given.isascii():
        return given
    return uuid.uuid4().hex


def format_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    """One error as the client sees it: always with `extensions.code`, internals masked."""
    formatted = error.formatted
    extensions = dict(formatted.get("extensions") or {})
    original = error.original_error
    if error.path is None:
        # Raised before execution: syntax, validation, or variable coercion.
        if isinstance(error, GraphQLSyntaxError):
            extensions.setdefault("code", "GRAPHQL_PARSE_FAILED")
        elif _BAD_VARIABLE_VALUE.match(error.message):
            extensions.setdefault("code", "BAD_USER_INPUT")
        else:
            extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
    elif isinstance(original, InvalidInput):
        extensions["code"] = "BAD_USER_INPUT"
        if original.field:
            extensions["field"] = original.field
    elif isinstance(original, NotAuthenticated):
        extensions["code"] = "UNAUTHENTICATED"
    elif isinstance(original, Forbidden):
        extensions["code"] = "FORBIDDEN"
    elif original is None or isinstance(original, GraphQLError):
        extensions.setdefault("code", "INTERNAL_SERVER_ERROR")
    else:
        logger.error(
            "unexpected error in %s (request %s)",
            ".".join(str(p) for p in error.path),
            request_id,
            exc_info=original,
        )
        formatted = {"message": MASKED_MESSAGE, "locations": formatted.get("locations", [])}
        if error.path is not None:
            formatted["path"] = error.path
        extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    formatted["extensions"] = extensions
    return dict(formatted)


class GraphQLApp(GraphQL[Context, None]):
    def __init__(
        self, schema: Any, *, db: Database, settings: Settings, services: Services
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            allow_queries_via_get=True,
            allowed_origins=settings.cors_origins,
        )
        self.db = db
        self.settings = settings
        self.services = services

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(
            db=self.db,
            settings=self.settings,
            services=self.services,
            request=request,
            response=response,
            client_ip=request.client.host if request.client else "unknown",
        )
        context.sql = track_sql()
        request.state.shopql = context
        request.state.request_id = request_id_of(request)
        request.state.started = time.perf_counter()
        if isinstance(response, Response):
            response.headers["x-request-id"] = request.state.request_id
            await authenticate(context, request.headers.get("authorization"))
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request_id = getattr(request.state, "request_id", "") or request_id_of(request)
        data: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            data["errors"] = [format_error(err, request_id) for err in result.errors]
        extensions = dict(result.extensions or {})
        context = getattr(request.state, "shopql", None)
        if self.settings.debug and context is not None:
            extensions["sql"] = {
                "count": context.sql.count,
                "ms": round(context.sql.seconds * 1000, 3),
            }
        if extensions:
            data["extensions"] = extensions
        return data

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        """orjson refuses what is not valid Unicode (lone surrogates), and the body must
        be a JSON object (or a batch list) before strawberry reads it."""
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if not isinstance(decoded, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        return decoded
