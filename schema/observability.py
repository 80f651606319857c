"""What an operator sees: the access log, request metrics, GraphQL operation spans,
`GET /metrics`, `GET /readyz` and `shopql check`.

The instruments themselves live in `models/telemetry.py` (the resolvers and the data layer
record into them); this module is the HTTP side:

- `ObservabilityMiddleware` (plain ASGI, no per-field hooks) times every HTTP request,
  makes the app's `Metrics` current for it, and at the end writes one access line and
  records the GraphQL request metrics from what the GraphQL view left in the request state
  (operation name, outcome, error codes, SQL counts, viewer).
- `Tracing` wraps each GraphQL HTTP request in one server span named after the operation
  (child of an incoming W3C `traceparent`); SQL statements become its child spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from graphql import GraphQLError, OperationDefinitionNode, parse
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models import telemetry
from models.db import Database
from models.settings import DEVELOPMENT_SECRET_KEY, MIN_SECRET_LENGTH, Settings, SettingsError
from models.telemetry import ANONYMOUS, OPERATION_NAME, Metrics, SqlTracer

logger = logging.getLogger("shopql.observability")
access_logger = logging.getLogger("shopql.access")

MAX_REQUEST_ID = 128
# Polled by load balancers and Prometheus: their access lines are DEBUG, not INFO.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READY_TIMEOUT = 5.0
CHECK_TIMEOUT = 10.0
MAX_CACHED_QUERY = 8192  # longer documents are parsed again for each traced request


# --------------------------------------------------------------------------- request IDs


def request_id_for(scope: Scope) -> str:
    """The request's ID: the client's X-Request-ID when it is short printable ASCII, else a
    new one; computed once per request and kept in the request state."""
    state = scope.setdefault("state", {})
    found: str | None = state.get("request_id")
    if found is not None:
        return found
    given = ""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            break
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable() and given.isascii():
        request_id = given
    else:
        request_id = os.urandom(16).hex()  # as random as uuid4().hex, a fifth of its cost
    state["request_id"] = request_id
    return request_id


def operation_label(name: object) -> str:
    """A client-sent operation name as it may appear in a log line or a span: a safe
    identifier of at most 64 characters, else "anonymous"."""
    if isinstance(name, str) and OPERATION_NAME.fullmatch(name):
        return name
    return ANONYMOUS


# --------------------------------------------------------------------------- middleware


class ObservabilityMiddleware:
    """Times each HTTP request; writes the access line and records request metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        if scope["type"] != "http":
            if metrics is None:
                await self.app(scope, receive, send)
                return
            tokens = telemetry.activate(metrics)
            try:
                await self.app(scope, receive, send)
            finally:
                telemetry.deactivate(tokens)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500  # when the app fails before it starts a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        active = telemetry.activate(metrics) if metrics is not None else None
        try:
            await self.app(scope, receive, send_status)
        finally:
            if active is not None:
                telemetry.deactivate(active)
            self._finish(scope, state, status, time.perf_counter() - started)

    def _finish(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        context = state.get("shopql")  # the GraphQL context: set for GraphQL requests only
        outcome: str | None = state.get("outcome")
        if status >= 500:
            outcome = "server_error"
        elif outcome is None:
            outcome = "ok" if status < 400 else "bad_request"
        if context is not None and self.metrics is not None:
            sql = context.sql
            self.metrics.operation(state.get("operation")).observe(
                outcome, seconds, sql.count, sql.seconds
            )
        if not self.access_log:
            return
        path = scope.get("path", "")
        level = logging.DEBUG if path in PROBE_PATHS else logging.INFO
        if not access_logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "request_id": request_id_for(scope),
            "method": scope.get("method", ""),
            "path": path,  # never the query string: GET /graphql carries variables there
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        if context is not None:
            fields["operation"] = operation_label(state.get("operation"))
            fields["outcome"] = outcome
            codes = state.get("error_codes")
            if codes:
                fields["error_codes"] = codes
            fields["sql_count"] = context.sql.count
            fields["sql_ms"] = round(context.sql.seconds * 1000, 2)
            if context.viewer is not None:
                fields["user_id"] = context.viewer.id
        client = scope.get("client")
        if client:
            fields["client_ip"] = client[0]
        access_logger.log(
            level, "%s %s %s", fields["method"], path, status, extra={"fields": fields}
        )


# --------------------------------------------------------------------------- tracing


@functools.lru_cache(maxsize=512)
def _cached_operation_type(query: str, operation_name: str | None) -> str:
    return _operation_type(query, operation_name)


def _operation_type(query: str, operation_name: str | None) -> str:
    try:
        document = parse(query, no_location=True)
    except GraphQLError:
        return "query"  # the span gets the parse error's outcome; the name stays generic
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    for op in operations:
        if operation_name is None and len(operations) == 1:
            return op.operation.value
        if op.name is not None and op.name.value == operation_name:
            return op.operation.value
    return "query"


def operation_type(query: object, operation_name: object) -> str:
    """The operation's type: query, mutation or subscription (small documents are parsed
    once, then cached)."""
    if not isinstance(query, str):
        return "query"
    name = operation_name if isinstance(operation_name, str) else None
    if len(query) <= MAX_CACHED_QUERY:
        return _cached_operation_type(query, name)
    return _operation_type(query, name)


class Tracing:
    """One span per GraphQL HTTP request (never per field) and one per SQL statement,
    from the TracerProvider the app was given (never the global one)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("shopql")
        self.sql = SqlTracer(self.tracer)
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._status = Status
        self._error = StatusCode.ERROR

    @contextlib.contextmanager
    def request_span(self, request: Request) -> Iterator[Any]:
        """The request's span, current while it runs; its parent is the incoming
        `traceparent` when there is one. Named "graphql" until the operation is known."""
        parent = self._propagator.extract(request.headers)
        with self.tracer.start_as_current_span(
            "graphql",
            context=parent,
            kind=self._server,
            attributes={"shopql.request_id": request_id_for(request.scope)},
            record_exception=False,  # exception texts may quote values; the type is enough
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                if getattr(exc, "status_code", 500) >= 500:
                    span.set_status(self._status(self._error, type(exc).__name__))
                raise

    def name_operation(self, span: Any, query: object, operation_name: object) -> None:
        kind = operation_type(query, operation_name)
        label = operation_label(operation_name)
        span.update_name(kind if label == ANONYMOUS else f"{kind} {label}")
        span.set_attribute("graphql.operation.type", kind)
        span.set_attribute("graphql.operation.name", label)

    def failed(self, span: Any, reason: str) -> None:
        span.set_status(self._status(self._error, reason))


# --------------------------------------------------------------------------- /metrics


def metrics_endpoint(
    metrics: Metrics, token: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics` in the Prometheus text format, for `Authorization: Bearer <token>`
    only (without a token only in debug mode: Settings refuses that otherwise)."""
    expected = f"Bearer {token}".encode() if token else None

    async def endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return PlainTextResponse(
                    "unauthorized", status_code=401, headers={"www-authenticate": "Bearer"}
                )
        body = await asyncio.to_thread(metrics.render) if metrics.multiprocess else metrics.render()
        return Response(body, media_type=telemetry.CONTENT_TYPE)

    return endpoint


# --------------------------------------------------------------------------- readiness


async def readiness(db: Database) -> dict[str, str]:
    """`database`: answers a query; `migrations`: the schema is at the code's head. Values
    are "ok", "error", "pending" or "unknown", never an exception's text."""
    from models.migrate import pending

    facts = {"database": "ok", "migrations": "ok"}
    try:
        await asyncio.wait_for(db.ping(), timeout=READY_TIMEOUT)
    except Exception:  # the reason is logged, never returned
        logger.exception("readiness check failed: database unreachable")
        return {"database": "error", "migrations": "unknown"}
    try:
        missing = await asyncio.wait_for(pending(db), timeout=READY_TIMEOUT)
    except Exception:
        logger.exception("readiness check failed: cannot read the migration state")
        facts["migrations"] = "error"
    else:
        if missing:
            facts["migrations"] = "pending"
    return facts


def readyz_endpoint(db: Database) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_request: Request) -> Response:
        facts = await readiness(db)
        ready = all(value == "ok" for value in facts.values())
        body = {"status": "ok" if ready else "unavailable", **facts}
        return JSONResponse(body, status_code=200 if ready else 503)

    return endpoint


# --------------------------------------------------------------------------- shopql check


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _describe(exc: BaseException, *secrets: str | None) -> str:
    """An exception as one short line, with any secret it may quote blanked out."""
    cause = getattr(exc, "orig", None) or exc
    text = (str(cause).strip().splitlines() or [""])[0][:200]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _secret_check(env: Mapping[str, str], debug: bool) -> Check:
    secret = env.get("SECRET_KEY", "").strip()
    if not secret or secret == DEVELOPMENT_SECRET_KEY:
        if debug:
            return Check("secret key", True, "development key (accepted in debug mode only)")
        return Check("secret key", False, "SECRET_KEY is not set (or is the development key)")
    if len(secret) < MIN_SECRET_LENGTH:
        return Check(
            "secret key",
            debug,
            f"SECRET_KEY has {len(secret)} characters; at least {MIN_SECRET_LENGTH} are needed",
        )
    return Check("secret key", True, f"{len(secret)} characters")


async def _database_checks(url: str) -> list[Check]:
    from sqlalchemy.engine import make_url

    from models.migrate import pending

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = parsed.database or ""
        if path and path != ":memory:" and not await asyncio.to_thread(Path(path).exists):
            return [
                Check("database", False, f"the SQLite file {path} does not exist"),
                Check("migrations", False, "not checked: run `shopql migrate` to create it"),
            ]
    password = parsed.password
    db = Database(url, pool_size=1)
    try:
        try:
            await asyncio.wait_for(db.ping(), timeout=CHECK_TIMEOUT)
        except Exception as exc:
            return [
                Check("database", False, f"unreachable ({_describe(exc, password)})"),
                Check("migrations", False, "not checked: the database is unreachable"),
            ]
        checks = [Check("database", True, f"{db.dialect} answers")]
        try:
            missing = await asyncio.wait_for(pending(db), timeout=CHECK_TIMEOUT)
        except Exception as exc:
            checks.append(Check("migrations", False, f"cannot read ({_describe(exc)})"))
        else:
            if missing:
                checks.append(
                    Check(
                        "migrations",
                        False,
                        f"{len(missing)} pending ({', '.join(missing)}): run `shopql migrate`",
                    )
                )
            else:
                checks.append(Check("migrations", True, "up to date"))
        return checks
    finally:
        await db.dispose()


async def _redis_check(url: str) -> Check:
    try:
        import redis.asyncio as redis_asyncio  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return Check("redis", False, "REDIS_URL is set but the `redis` package is not installed")
    client = redis_asyncio.from_url(url)
    try:
        await asyncio.wait_for(client.ping(), timeout=CHECK_TIMEOUT)
    except Exception as exc:
        password = urlsplit(url).password
        return Check("redis", False, f"unreachable ({_describe(exc, password)})")
    finally:
        await client.aclose()
    return Check("redis", True, "answers")


async def run_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """`shopql check`: the configuration, the secret key, the database, its migrations and
    (when REDIS_URL is set) Redis; each failure with a readable reason."""
    from models.settings import DEFAULT_DATABASE_URL

    env = os.environ if env is None else env
    checks: list[Check] = []
    settings: Settings | None
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        settings = None
        checks.append(Check("configuration", False, str(exc)))
    else:
        checks.append(Check("configuration", True, "every setting is valid"))
    if settings is not None:
        debug = settings.debug
    else:
        debug = env.get("SHOPQL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
    checks.append(_secret_check(env, debug))
    url = settings.database_url if settings else (env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        checks.extend(await _database_checks(url))
    else:
        checks.append(Check("database", False, "not checked: DATABASE_URL is invalid"))
    redis_url = settings.redis_url if settings else (env.get("REDIS_URL", "").strip() or None)
    if redis_url:
        checks.append(await _redis_check(redis_url))
    return checks
