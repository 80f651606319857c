"""Metrics and SQL spans that the data layer and the resolvers record into.

`Metrics` holds one app's Prometheus instruments in its own `CollectorRegistry` (never the
global one), with label children bound once and reused. The GraphQL layer
(`schema/observability.py`) makes an app's `Metrics` current for each request
(`activate`), so code below it records with one call and no reference to the app:
`rate_limited("accounts")`, `checkout_outcome`, `dataloader` batch sizes. Outside a request,
or with metrics off, those calls do nothing.

`SqlTracer` turns each SQL statement into an OpenTelemetry span (statement text only, never
parameter values), called from the engine events in `models/db.py` only when the request
is traced. OpenTelemetry is imported lazily: without `OTEL_EXPORTER_OTLP_ENDPOINT` nothing
here touches it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from models import dataloader

CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_OPERATIONS = 200
OPERATION_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
ANONYMOUS = "anonymous"
OTHER = "other"
OUTCOMES = ("ok", "errors", "internal_error", "bad_request", "server_error")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SQL_COUNT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
SQL_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
MAX_STATEMENT = 2000  # characters of SQL text kept on a span

P = ParamSpec("P")
R = TypeVar("R")


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess mode (several uvicorn workers) is on when this is
    set before the first import of prometheus_client in the worker."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class OperationMetrics:
    """The label children of one operation name, bound once."""

    __slots__ = ("duration", "outcomes", "sql_count", "sql_seconds")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.outcomes = {o: metrics.requests.labels(name, o) for o in OUTCOMES}
        self.duration = metrics.duration.labels(name)
        self.sql_count = metrics.sql_statements.labels(name)
        self.sql_seconds = metrics.sql_seconds.labels(name)

    def observe(self, outcome: str, seconds: float, sql_count: int, sql_seconds: float) -> None:
        self.outcomes[outcome].inc()
        self.duration.observe(seconds)
        self.sql_count.observe(sql_count)
        self.sql_seconds.observe(sql_seconds)


class Metrics:
    """One app's instruments. Operation names are bounded: a safe identifier of at most 64
    characters, else "anonymous"; after `max_operations` distinct names, "other"."""

    def __init__(self, *, max_operations: int = MAX_OPERATIONS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        self.max_operations = max_operations
        r = self.registry
        self.requests = Counter(
            "shopql_graphql_requests",
            "GraphQL requests by operation name and outcome",
            ["operation", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "shopql_graphql_request_duration_seconds",
            "GraphQL request latency (first byte in to last byte out) by operation name",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sql_statements = Histogram(
            "shopql_sql_statements_per_request",
            "SQL statements one GraphQL request ran, by operation name",
            ["operation"],
            buckets=SQL_COUNT_BUCKETS,
            registry=r,
        )
        self.sql_seconds = Histogram(
            "shopql_sql_seconds_per_request",
            "Time one GraphQL request spent in SQL statements, by operation name",
            ["operation"],
            buckets=SQL_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "shopql_dataloader_batch_size",
            "Keys per DataLoader batch (one SQL statement each), by loader",
            ["loader"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.subscriptions = Gauge(
            "shopql_websocket_subscriptions_active",
            "GraphQL subscriptions currently open over WebSocket",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.webhook_deliveries = Counter(
            "shopql_webhook_deliveries",
            "Outgoing webhook deliveries by outcome",
            ["outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "shopql_rate_limited",
            "Requests refused by a rate limit, by limiter",
            ["limiter"],
            registry=r,
        )
        self.checkout_completions = Counter(
            "shopql_checkout_completions",
            "checkoutComplete calls by result (completed, or the payload error code)",
            ["result"],
            registry=r,
        )
        self._operations: dict[str, OperationMetrics] = {}
        self._loaders: dict[str, Any] = {}
        self._anonymous = OperationMetrics(self, ANONYMOUS)

    def operation(self, name: str | None) -> OperationMetrics:
        if name is None:
            return self._anonymous
        found = self._operations.get(name)
        if found is not None:
            return found
        if OPERATION_NAME.fullmatch(name) is None:
            return self._anonymous
        if len(self._operations) >= self.max_operations:
            name = OTHER
            found = self._operations.get(name)
            if found is not None:
                return found
        found = self._operations[name] = OperationMetrics(self, name)
        return found

    def observe_batch(self, loader: str, size: int) -> None:
        child = self._loaders.get(loader)
        if child is None:
            child = self._loaders[loader] = self.batch_size.labels(loader)
        child.observe(size)

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's values in
        multiprocess mode."""
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """At worker exit: drop this process's live gauge values (multiprocess mode)."""
        if self.multiprocess:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid())


# --------------------------------------------------------------------------- per request

_active: ContextVar[Metrics | None] = ContextVar("shopql_metrics", default=None)


def activate(metrics: Metrics | None) -> tuple[Token[Metrics | None], Token[Any]]:
    """Make `metrics` current for this request (and the tasks it spawns)."""
    observer = metrics.observe_batch if metrics is not None else None
    return _active.set(metrics), dataloader.batch_observer.set(observer)


def deactivate(tokens: tuple[Token[Metrics | None], Token[Any]]) -> None:
    _active.reset(tokens[0])
    dataloader.batch_observer.reset(tokens[1])


def current() -> Metrics | None:
    return _active.get()


def rate_limited(limiter: str) -> None:
    """A request refused by the `limiter` rate limit (a fixed name from the code)."""
    metrics = _active.get()
    if metrics is not None:
        metrics.rate_limited.labels(limiter).inc()


def webhook_delivered(outcome: str) -> None:
    """One outgoing webhook delivery attempt: "delivered", "failed" or "retried"."""
    metrics = _active.get()
    if metrics is not None:
        metrics.webhook_deliveries.labels(outcome).inc()


def subscription_opened() -> None:
    metrics = _active.get()
    if metrics is not None:
        metrics.subscriptions.inc()


def subscription_closed() -> None:
    metrics = _active.get()
    if metrics is not None:
        metrics.subscriptions.dec()


def checkout_outcome(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Count a checkoutComplete call by its result: "completed" when it returns an order,
    else the code of its first payload error."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await fn(*args, **kwargs)
        metrics = _active.get()
        if metrics is not None:
            errors = getattr(result, "errors", None)
            if getattr(result, "order", None) is not None:
                label = "completed"
            elif errors:
                label = str(getattr(errors[0], "code", "unknown")).lower()
            else:
                label = "unknown"
            metrics.checkout_completions.labels(label).inc()
        return result

    return wrapper


# --------------------------------------------------------------------------- SQL spans

_SPANS = "shopql_spans"


class SqlTracer:
    """Starts one client span per SQL statement, as a child of the current span."""

    __slots__ = ("_kind", "_tracer")

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.trace import SpanKind

        self._tracer = tracer
        self._kind = SpanKind.CLIENT

    def start(self, conn: Any, statement: str) -> None:
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = self._tracer.start_span(
            operation,
            kind=self._kind,
            attributes={
                "db.system": conn.dialect.name,
                "db.operation": operation,
                "db.statement": statement[:MAX_STATEMENT],
            },
        )
        conn.info.setdefault(_SPANS, []).append(span)

    def end(self, conn: Any) -> None:
        spans = conn.info.get(_SPANS)
        if spans:
            spans.pop().end()

    def fail(self, conn: Any, error: BaseException) -> None:
        """End the statement's span as failed; the error's type only (its text may quote
        the values the statement was given)."""
        spans = conn.info.get(_SPANS)
        if spans:
            from opentelemetry.trace import Status, StatusCode

            span = spans.pop()
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()


def otlp_tracer_provider(endpoint: str) -> Any:
    """A TracerProvider exporting in batches over OTLP/HTTP to `endpoint` (the collector's
    base URL, e.g. http://collector:4318). OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    are honoured; the service name defaults to "shopql"."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "shopql"}
    provider = TracerProvider(resource=Resource.create(attributes))
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        endpoint.rstrip("/") + "/v1/traces"
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
    return provider
