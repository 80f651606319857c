"""GraphQL over HTTP (and WebSocket): strawberry's ASGI view with shopql's context,
error codes, masking and debug extensions."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, cast

import orjson
from cross_web import HTTPException
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from models.db import Database, run_inline, track_sql
from models.errors import Forbidden, InvalidInput, NotAuthenticated
from models.ratelimit import RecentRefusals, client_key, rate_limiter
from models.settings import Settings
from resolvers.accounts import start_authentication
from resolvers.context import Context, Services
from schema import transport
from schema.graphiql import assets_dir, graphiql_page
from schema.limits import CostCharge, cost_charge
from schema.observability import Tracing, request_id_for
from schema.persisted import ID_FIELDS, PersistedQueryError, persisted_documents
from schema.speculation import read_ahead
from schema.ws import WebSocketSupport

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


def request_id_of(request: Request | WebSocket) -> str:
    """The client's X-Request-ID when usable, else a new one; the same all request long
    (the access log line, the error's `requestId` and the response header agree)."""
    return request_id_for(request.scope)


def _cancelled(error: GraphQLError) -> bool:
    """Whether the error's cause chain holds an asyncio.CancelledError."""
    seen: BaseException | None = error.original_error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, asyncio.CancelledError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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


async def _settle_authentication(context: Context, request_id: str) -> None:
    """A request answered before its operation (a request error, GraphiQL's page) may
    leave its session lookup running: it ends here, before the request's context is
    let go, and its failure is logged (no operation raised it)."""
    reading = context.reading_ahead
    if reading is not None:  # its failures are logged where they happen
        await asyncio.wait([reading.task])
    pending = context.authenticating
    if pending is None:
        return
    try:
        await pending
    except Exception:
        logger.exception("authentication failed outside the operation (request %s)", request_id)


class GraphQLApp(WebSocketSupport, GraphQL[Context, None]):
    def __init__(
        self,
        schema: Any,
        *,
        db: Database,
        settings: Settings,
        services: Services,
        tracing: Tracing | None = None,
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
        self.tracing = tracing
        if not settings.introspection_enabled:
            transport.refuse_introspection(schema)
        self.graphiql_assets = assets_dir(settings.graphiql_assets_dir)
        # Persisted queries / trusted documents and rate limiting (README "Persisted
        # queries"): in Redis when the app has a client, else in process memory.
        self.persisted = persisted_documents(schema, settings, services.redis)
        self.rate_limiter = rate_limiter(
            per_minute=settings.rate_limit,
            burst=settings.rate_limit_burst,
            redis=services.redis,
            prefix=settings.redis_prefix,
        )
        self.refusals = RecentRefusals()
        # A POST of one operation skips strawberry's generic request handling (`_serve_post`);
        # off, every request goes through strawberry's `run` (tests compare the two).
        self.direct_posts = True

    def should_render_graphql_ide(self, request: Any) -> bool:
        """Not for a hashed GET (`?extensions=...` or a document ID), which runs."""
        params = request.query_params
        return super().should_render_graphql_ide(request) and not any(
            name in params for name in ("extensions", *ID_FIELDS)
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from this server's own assets (schema/graphiql.py), never from a CDN."""
        return graphiql_page(request, self.graphiql_assets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HTTP requests pass the transport rules (schema.transport) first; every answer
        but a result is a GraphQL error body with the request ID."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request_id = request_id_for(scope)
        media_type = transport.response_media_type(Request(scope).headers.get("accept"))
        max_body = self.settings.max_body_bytes
        request: Request | None = None
        try:
            served = transport.admit(scope, max_body_bytes=max_body)
            request = Request(served, transport.limit_body(receive, max_body))
            request.state.media_type = media_type
            response = cast("Response", await self.run(request))  # HTTP: never a WebSocket
        except HTTPException as exc:
            error = transport.as_transport_error(exc)
            response = transport.error_response(error, media_type=media_type, request_id=request_id)
        except Exception:
            logger.exception("unexpected error outside the operation (request %s)", request_id)
            response = transport.internal_error(request_id)
        else:
            transport.finish(response, request.state, media_type)
        try:
            await response(scope, receive, send)
        finally:
            # The context (still read by the observability middleware) and the request
            # hold each other (request -> scope -> state -> context -> request): cut it, so
            # the request's objects are freed as it ends, not left to the garbage collector
            context = getattr(request.state, "shopql", None) if request is not None else None
            if context is not None:
                await _settle_authentication(context, request_id)
                context.request = None

    async def run(  # type: ignore[override]
        self,
        request: Request | WebSocket,
        context: Context = UNSET,
        root_value: None = UNSET,
    ) -> Response | WebSocket:
        """With tracing on, each HTTP request runs inside one server span."""
        tracing = self.tracing
        if tracing is None or not isinstance(request, Request):
            return await self._serve(request, context, root_value)
        with tracing.request_span(request) as span:
            request.state.span = span
            return await self._serve(request, context, root_value)

    async def _serve(
        self, request: Request | WebSocket, context: Context, root_value: None
    ) -> Response | WebSocket:
        """A POST of one operation by `_serve_post`; everything else by strawberry."""
        if (
            self.direct_posts
            and isinstance(request, Request)
            and context is UNSET
            and request.method == "POST"
            and not (  # no HTTP stream transport is configured (subscriptions: WebSocket)
                self._stream_transport_map
                and self._get_stream_transport_from_headers(request.headers) is not None
            )
        ):
            return await self._serve_post(request)
        return await super().run(request, context, root_value)

    async def _serve_post(self, request: Request) -> Response:
        """A POST of one operation answered with one result: what strawberry's `run`
        does for it, without what that request cannot need (the GraphiQL and stream
        checks, content-type parsing, the result-type checks). Anything else (a batch)
        goes on through strawberry's `run` with the same context and sub-response."""
        sub_response = await self.get_sub_response(request)
        # Before the body is read: the session lookup starts here (get_context)
        context = await self.get_context(request, response=sub_response)
        data = self.decode_json(await request.body())
        if not isinstance(data, dict):
            return cast("Response", await super().run(request, context))
        request_data = transport.request_data(data)
        result = await self.execute_single(
            request, self.request_adapter_class(request), sub_response, context, None, request_data
        )
        return self.create_response(
            response_data=await self.process_result(request, result), sub_response=sub_response
        )

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """One per request, also when a direct POST hands its request on to strawberry."""
        state = request.state
        sub_response: Response | None = getattr(state, "sub_response", None)
        if sub_response is None:
            # strawberry's: an empty Response with no status and no headers (built
            # without rendering a content-length only to delete it)
            sub_response = Response.__new__(Response)
            sub_response.status_code = None  # type: ignore[assignment]
            sub_response.background = None
            sub_response.body = b""
            sub_response.raw_headers = []
            state.sub_response = sub_response
        return sub_response

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """The operation, rate limited (schema/limits.py CostCharge): a client back before
        its Retry-After is refused unparsed; over the limit, 429 with Retry-After."""
        self._read_ahead(context, request_data)
        if self.rate_limiter is not None:
            await context.authenticated()  # the viewer's bucket, not the address's
        charge = self._cost_charge(context)
        result = await charge.refuse_early() if charge is not None else None
        if result is None:
            result = await self._execute(
                request, request_adapter, sub_response, context, root_value, request_data, charge
            )
            if charge is not None:
                await charge.settle(result)
        for error in result.errors or ():
            extensions = error.extensions or {}
            if extensions.get("code") == "RATE_LIMITED":
                sub_response.status_code = 429
                sub_response.headers["retry-after"] = str(extensions["retryAfter"])
        return result

    async def _execute(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
        charge: CostCharge | None,
    ) -> ExecutionResult:
        """Note the operation name (access log, metrics) and name the span after it."""
        try:  # a persisted document's text (schema/persisted.py)
            request_data = await self.persisted.resolve(request, request_data)
        except PersistedQueryError as exc:
            return ExecutionResult(data=None, errors=[exc.graphql_error()])
        state = request.state
        state.operation = request_data.operation_name
        if self.tracing is not None:
            span = getattr(state, "span", None)
            if span is not None:
                self.tracing.name_operation(span, request_data.query, request_data.operation_name)
        self._read_ahead(context, request_data)  # a persisted document's, now it has text
        await context.authenticated()
        reading = context.reading_ahead
        if reading is not None:
            await reading.settle(context)
        charged = cost_charge.set(charge)
        try:
            operation = super().execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=sub_response,
                context=context,
                root_value=root_value,
                request_data=request_data,
            )
            result = await transport.within_deadline(
                operation, seconds=self.settings.request_timeout, context=context
            )
        finally:
            cost_charge.reset(charged)
        return result

    def _read_ahead(self, context: Context, request_data: GraphQLRequestData) -> None:
        """Start reading the viewer's orders while the session lookup runs, when the
        operation asks for them (schema.speculation); at most once per request."""
        query = request_data.query
        if context.reading_ahead is None and context.authenticating is not None and query:
            context.reading_ahead = read_ahead(
                self.schema, context, query, request_data.variables, request_data.operation_name
            )

    def _cost_charge(self, context: Context) -> CostCharge | None:
        """The rate-limit bucket of this request: its user's with a valid token, else its
        client address (X-Forwarded-For counts only from FORWARDED_ALLOW_IPS proxies)."""
        if self.rate_limiter is None:
            return None
        viewer = context.viewer
        key = client_key(user_id=viewer.id if viewer else None, client_ip=context.client_ip)
        return CostCharge(self.rate_limiter, key, self.refusals)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(
            db=self.db,
            settings=self.settings,
            services=self.services,
            request=request,
            response=response,
            client_ip=client.host if (client := request.client) else "unknown",
        )
        context.sql = track_sql()
        if self.tracing is not None:
            context.sql.tracer = self.tracing.sql
        state = request.state
        state.shopql = context
        state.request_id = request_id = request_id_of(request)
        state.started = time.perf_counter()
        if isinstance(response, Response):
            response.headers["x-request-id"] = request_id
            # The token's session lookup starts now and is awaited just before the
            # operation (`_execute`), so the request's body is read and checked while
            # the database answers. Inline up to its first wait: the query is sent here.
            lookup = start_authentication(context, request.headers.get("authorization"))
            if lookup is not None:
                finished, pending = run_inline(lookup)
                if not finished:
                    context.authenticating = pending
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        state = request.state
        request_id = getattr(state, "request_id", "") or request_id_of(request)
        # A request error (nothing ran) has no `data` under application/graphql-response+json;
        # application/json keeps `data: null` for older clients (schema.transport).
        state.request_error = transport.is_request_error(result)
        data: GraphQLHTTPResponse = {}
        if not state.request_error or (
            getattr(state, "media_type", transport.JSON) == transport.JSON
        ):
            data["data"] = result.data
        if result.errors:
            # A field cancelled because a sibling's error already nulled its parent is
            # an artifact of that error, not a failure of its own: leave it out.
            reported = [e for e in result.errors if not _cancelled(e)] or result.errors
            errors = [format_error(err, request_id) for err in reported]
            data["errors"] = cast("list[object]", errors)
            codes = sorted({str(e["extensions"].get("code")) for e in errors})
            state.error_codes = codes
            if "INTERNAL_SERVER_ERROR" in codes:
                state.outcome = "internal_error"
                span = getattr(state, "span", None)
                if span is not None and self.tracing is not None:
                    self.tracing.failed(span, "INTERNAL_SERVER_ERROR")
            else:
                state.outcome = "errors"
        else:
            state.outcome = "ok"
        extensions = dict(result.extensions or {})
        context = getattr(state, "shopql", None)
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
        transport.check_body(decoded)
        return decoded
