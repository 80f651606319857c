"""GraphQL over HTTP, the transport rules (https://graphql.github.io/graphql-over-http/):
what a request may look like before the GraphQL layer reads it, how the answer's media
type and status are chosen, and the limits a hostile client runs into.

- Methods: GET (queries only) and POST; anything else is 405 with `Allow`.
- POST bodies are JSON (`application/json` or `application/graphql-response+json`, UTF-8);
  anything else (text/plain, forms: what a cross-site page can send without a CORS
  preflight) is 415.
- Sizes: a body over `max_body_bytes` is 413, refused from its Content-Length or, when
  there is none (chunked), as soon as the bytes read pass the limit; a GET query string
  over `max_query_string_bytes` is 414.
- Media type: `application/graphql-response+json` when the client's Accept prefers it,
  else `application/json`. Under the former, a request error (no `data`: parse,
  validation, variable coercion, limits) is HTTP 400 and the body has no `data` entry;
  under the latter it stays 200 with `data: null` (legacy clients).
- Every refusal is a GraphQL response: `{"errors": [{"message", "extensions": {"code"}}]}`
  with the request's X-Request-ID.
- Deadline: an operation running longer than `request_timeout` is cancelled (its open
  transaction rolls back, its DataLoader batches are cancelled) and answered 504 with
  `REQUEST_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import FieldNode, GraphQLError
from graphql.validation import ValidationRule
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from models.dataloader import DataLoader

logger = logging.getLogger("shopql.graphql")

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
REQUEST_MEDIA_TYPES = frozenset({JSON, GRAPHQL_RESPONSE})
METHODS = ("GET", "POST")
MAX_QUERY_STRING_BYTES = 16 * 1024  # never more than the body limit either
MAX_ACCEPT_RANGES = 32  # media ranges of an Accept header looked at
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")  # a GraphQL name, echoed back only then

# Status and `extensions.code` of transport refusals.
BAD_REQUEST = "BAD_REQUEST"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
URI_TOO_LONG = "URI_TOO_LONG"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
_CODES = {
    400: BAD_REQUEST,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: PAYLOAD_TOO_LARGE,
    414: URI_TOO_LONG,
    415: UNSUPPORTED_MEDIA_TYPE,
}
TIMEOUT_STATUS = 504
# A cancelled DataLoader batch gets this long to give its connection back.
_CANCEL_GRACE = 2.0


class TransportError(HTTPException):
    """A request refused before (or instead of) running an operation.

    `graphql_error`: the request reached GraphQL, which refused the operation (an unknown
    operationName, a subscription over HTTP): answered like a validation error, 200 with
    `data: null` under application/json, 400 without `data` under
    application/graphql-response+json."""

    def __init__(
        self,
        status_code: int,
        reason: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        graphql_error: bool = False,
    ) -> None:
        super().__init__(status_code, reason)
        self.code = code or _CODES.get(status_code, BAD_REQUEST)
        self.headers = dict(headers or {})
        self.graphql_error = graphql_error


# --------------------------------------------------------------------------- media types


def _media_ranges(header: str) -> Iterator[tuple[str, float]]:
    for part in header.split(",")[:MAX_ACCEPT_RANGES]:
        media, *params = part.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        yield media.strip().lower(), quality


def _quality(ranges: list[tuple[str, float]], media_type: str) -> tuple[float, int]:
    """The quality the client gives `media_type`, from its most specific matching range,
    and that range's specificity (2 exact, 1 `type/*`, 0 `*/*`, -1 none)."""
    best = (0.0, -1)
    kind = media_type.split("/")[0]
    for media, quality in ranges:
        if media == media_type:
            specificity = 2
        elif media == f"{kind}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[1]:
            best = (quality, specificity)
    return best


def response_media_type(accept: str | None) -> str:
    """`application/graphql-response+json` when the client prefers it (or names it
    explicitly with the same quality as JSON), else `application/json`: also for a
    missing Accept, `*/*`, and an Accept that allows neither (the spec's legacy answer,
    rather than a 406 that helps nobody)."""
    if not accept:
        return JSON
    ranges = list(_media_ranges(accept))
    graphql_q, graphql_specificity = _quality(ranges, GRAPHQL_RESPONSE)
    json_q, _ = _quality(ranges, JSON)
    if graphql_q > json_q or (graphql_q == json_q > 0 and graphql_specificity == 2):
        return GRAPHQL_RESPONSE
    return JSON


def _request_media_type(content_type: str) -> str | None:
    """The body's media type when shopql reads it (JSON in UTF-8), else None."""
    media, *params = content_type.split(";")
    media = media.strip().lower()
    if media not in REQUEST_MEDIA_TYPES:
        return None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return None
    return media


# --------------------------------------------------------------------------- responses


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


def error_response(error: TransportError, *, media_type: str, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **error.headers}
    body = error_body(error.reason, error.code)
    status = error.status_code
    if error.graphql_error and media_type == JSON:
        body, status = {"data": None, **body}, 200
    return Response(orjson.dumps(body), status_code=status, media_type=media_type, headers=headers)


def as_transport_error(exc: HTTPException) -> TransportError:
    """strawberry's own refusals as shopql answers them: a mutation over GET is 405 with
    `Allow: POST`; the rest keep their status with a code for it."""
    if isinstance(exc, TransportError):
        return exc
    cause = exc.__cause__
    if isinstance(cause, InvalidOperationTypeError):
        if cause.operation_type is OperationType.MUTATION:
            return TransportError(
                405, "Mutations are only accepted over POST", headers={"allow": "POST"}
            )
        if cause.operation_type is OperationType.SUBSCRIPTION:
            return TransportError(
                400,
                "Subscriptions are served over WebSocket (graphql-transport-ws), not HTTP",
                code=VALIDATION_FAILED,
                graphql_error=True,
            )
    if isinstance(cause, CannotGetOperationTypeError):
        name = cause.operation_name
        reason = (
            f'Unknown operation named "{name}"'
            if name is not None and _NAME.fullmatch(name)
            else "The operationName names no operation of the document"
            if name is not None
            else exc.reason
        )
        return TransportError(400, reason, code=VALIDATION_FAILED, graphql_error=True)
    return TransportError(exc.status_code, exc.reason)


# --------------------------------------------------------------------------- request checks


def max_query_string_bytes(max_body_bytes: int) -> int:
    return min(MAX_QUERY_STRING_BYTES, max_body_bytes)


def admit(scope: Scope, *, max_body_bytes: int) -> Scope:
    """Checks made before anything is read (raises TransportError); the scope to serve the
    request with (a JSON body is presented to strawberry as plain `application/json`)."""
    headers = Headers(scope=scope)
    method = scope["method"]
    if method not in METHODS:
        raise TransportError(
            405, f"{method} is not supported: use GET or POST", headers={"allow": "GET, POST"}
        )
    if method == "GET":
        limit = max_query_string_bytes(max_body_bytes)
        if len(scope.get("query_string", b"")) > limit:
            raise TransportError(
                414, f"The query string is over {limit} bytes: send the operation with POST"
            )
        return scope
    content_type = headers.get("content-type")
    request_media = _request_media_type(content_type or "")
    if request_media is None:
        raise TransportError(
            415,
            "POST bodies must be JSON: send Content-Type: application/json"
            if content_type
            else "Content-Type is missing: send Content-Type: application/json",
        )
    length = headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise TransportError(400, "Content-Length is not a number")
        if int(length) > max_body_bytes:
            raise TransportError(413, f"The request body is over {max_body_bytes} bytes")
    if content_type != JSON:  # strawberry reads only this spelling
        raw = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*raw, (b"content-type", JSON.encode())]}
    return scope


def limit_body(receive: Receive, max_body_bytes: int) -> Receive:
    """`receive` that counts the body as it arrives and stops at the limit: a body with no
    (or a lying) Content-Length is refused without ever being held whole."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body_bytes:
                raise TransportError(413, f"The request body is over {max_body_bytes} bytes")
        return message

    return limited


def check_body(decoded: object) -> None:
    """Parameter types strawberry does not check itself (raises TransportError)."""
    if isinstance(decoded, dict):
        name = decoded.get("operationName")
        if name is not None and not isinstance(name, str):
            raise TransportError(400, "The operationName must be a string or null")


def request_data(data: dict[str, Any]) -> GraphQLRequestData:
    """A JSON body's operation, with the parameter checks (and messages) of strawberry's
    own body parsing (`AsyncBaseHTTPView.parse_http_body`)."""
    query = data.get("query")
    if not isinstance(query, str | None):
        raise HTTPException(
            400, "The GraphQL operation's `query` must be a string or null, if provided."
        )
    variables = data.get("variables")
    if not isinstance(variables, dict | None):
        raise HTTPException(
            400, "The GraphQL operation's `variables` must be an object or null, if provided."
        )
    extensions = data.get("extensions")
    if not isinstance(extensions, dict | None):
        raise HTTPException(
            400, "The GraphQL operation's `extensions` must be an object or null, if provided."
        )
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=data.get("operationName"),
        extensions=extensions,
        protocol="http",
    )


# --------------------------------------------------------------------------- status


def is_request_error(result: ExecutionResult) -> bool:
    """No operation ran (parse, validation, variable coercion, limits, deadline): the
    spec's "request error", answered without `data`."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


def finish(response: Response, state: Any, media_type: str) -> None:
    """A GraphQL result's answer: the negotiated media type, and its status (400 for a
    request error under application/graphql-response+json, 504 past the deadline)
    unless something (a rate limit) already chose another than 200."""
    if response.media_type != JSON:
        return  # GraphiQL's page, a stream
    response.headers["content-type"] = media_type
    if response.status_code != 200:
        return
    if REQUEST_TIMEOUT in getattr(state, "error_codes", ()):
        response.status_code = TIMEOUT_STATUS
    elif media_type == GRAPHQL_RESPONSE and getattr(state, "request_error", False):
        response.status_code = 400


def internal_error(request_id: str) -> Response:
    """A failure outside any operation (the database down while authenticating): masked,
    with the request ID the log line carries."""
    body = error_body("Internal server error", "INTERNAL_SERVER_ERROR")
    body["errors"][0]["extensions"]["requestId"] = request_id
    return Response(
        orjson.dumps(body),
        status_code=500,
        media_type=JSON,
        headers={"x-request-id": request_id},
    )


# --------------------------------------------------------------------------- deadline


def _loaders(root: object) -> Iterator[DataLoader[Any, Any]]:
    """The DataLoaders a request context holds (in its loader bundles, two levels down)."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(root, 0)]
    while stack:
        value, depth = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, DataLoader):
            yield value
            continue
        if depth >= 3:
            continue
        if isinstance(value, dict):
            children = list(value.values())
        else:
            children = list(getattr(value, "__dict__", {}).values())
        stack.extend((child, depth + 1) for child in children)


async def cancel_loads(context: object) -> None:
    """Cancel the DataLoader batches still running for a request and wait (briefly) for
    them to give their database connections back."""
    tasks = [
        task
        for loader in _loaders(context)
        for task in getattr(loader, "_tasks", ())  # the batches it runs (strong references)
        if not task.done()
    ]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_CANCEL_GRACE)


def timeout_result(seconds: float) -> ExecutionResult:
    error = GraphQLError(
        f"The operation did not finish within {seconds:g} seconds and was cancelled",
        extensions={"code": REQUEST_TIMEOUT},
    )
    return ExecutionResult(data=None, errors=[error])


async def within_deadline(
    operation: Awaitable[ExecutionResult], *, seconds: float, context: object
) -> ExecutionResult:
    """Run an operation, cancelled when it takes longer than `seconds`: its transaction
    rolls back (Database.transaction), its batches are cancelled."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            result = await operation
    except TimeoutError:
        if not deadline.expired():
            raise
    else:
        if not deadline.expired():
            return result
    await cancel_loads(context)
    logger.warning("operation cancelled after %gs (REQUEST_TIMEOUT)", seconds)
    return timeout_result(seconds)


# --------------------------------------------------------------------------- introspection

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


class NoIntrospectionRule(ValidationRule):
    """`__schema` and `__type` are refused (GRAPHQL_VALIDATION_FAILED); `__typename` is not
    introspection of the schema and stays."""

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.name.value in INTROSPECTION_FIELDS:
            self.report_error(GraphQLError("Introspection is disabled on this server", node))


class NoIntrospectionExtension(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, NoIntrospectionRule)
        yield


def refuse_introspection(schema: Any) -> None:
    """Add the rule to every operation of `schema` (after its other extensions, so the
    query limits' rules stay)."""
    if NoIntrospectionExtension not in schema.extensions:
        schema.extensions = (*schema.extensions, NoIntrospectionExtension)
