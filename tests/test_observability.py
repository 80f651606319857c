"""Operations: Prometheus metrics, the access log, structured logs without secrets, and
OpenTelemetry spans (one per operation and per SQL statement, never per field)."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from checkout_flow import (
    ADDRESS_UPDATE,
    COMPLETE,
    METHOD_UPDATE,
    PROMO_APPLY,
    US_ADDRESS,
    add_promo,
    caller,
    create_checkout,
    mutate,
    shipping_method_ids,
    stock_variants,
)
from conftest import TEST_SECRET, make_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from models import telemetry
from models.accounts.tables import mail_outbox
from models.db import Database
from models.logs import JsonFormatter, TextFormatter, configure_logging, logging_config
from models.settings import Settings, SettingsError
from models.telemetry import Metrics

TOKEN = "metrics-token-0123456789abcdef"
BEARER = {"authorization": f"Bearer {TOKEN}"}
LISTING = """query Listing { products(first: 5) {
  nodes { id name category { name } images { url } variants { sku } collections { name } } } }"""


# --------------------------------------------------------------------------- helpers


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def metric(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def metrics_client(db: Database, **settings: Any) -> Any:
    return make_client(db, metrics=True, metrics_token=TOKEN, **settings)


async def post(
    client: httpx.AsyncClient, query: str, name: str | None = None, **kw: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if name is not None:
        body["operationName"] = name
    response = await client.post("/graphql", json=body, **kw)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the process's logging back as it was (dictConfig replaces root handlers)."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {
        name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    yield
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, (level, handlers, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled


# --------------------------------------------------------------------------- settings


def test_metrics_are_off_by_default_and_never_public_by_accident() -> None:
    env = {"SECRET_KEY": TEST_SECRET}
    assert Settings.from_env(env).metrics is False
    with pytest.raises(SettingsError, match="SHOPQL_METRICS_TOKEN"):
        Settings.from_env({**env, "SHOPQL_METRICS": "1"})
    with pytest.raises(SettingsError, match="SHOPQL_METRICS_TOKEN"):
        Settings.from_env({**env, "SHOPQL_METRICS": "1", "SHOPQL_METRICS_TOKEN": "short"})
    on = Settings.from_env({**env, "SHOPQL_METRICS": "1", "SHOPQL_METRICS_TOKEN": TOKEN})
    assert on.metrics and on.metrics_token == TOKEN and TOKEN not in repr(on)
    # Debug mode (a developer's machine) may serve them without a token.
    assert Settings.from_env({"SHOPQL_DEBUG": "1", "SHOPQL_METRICS": "1"}).metrics


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHOPQL_LOG_FORMAT", "xml"),
        ("SHOPQL_LOG_LEVEL", "loud"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ],
)
def test_bad_operations_settings_are_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({"SECRET_KEY": TEST_SECRET, variable: value})


def test_log_format_follows_debug_unless_overridden() -> None:
    base = {"SECRET_KEY": TEST_SECRET}
    assert Settings.from_env(base).log_format_effective == "json"
    assert Settings.from_env({**base, "SHOPQL_DEBUG": "1"}).log_format_effective == "text"
    forced = Settings.from_env({**base, "SHOPQL_DEBUG": "1", "SHOPQL_LOG_FORMAT": "JSON"})
    assert forced.log_format_effective == "json"
    assert Settings.from_env({**base, "SHOPQL_LOG_LEVEL": "debug"}).log_level == "DEBUG"


# --------------------------------------------------------------------------- /metrics


async def test_metrics_endpoint_is_absent_when_metrics_are_off(catalog_db: Database) -> None:
    async with make_client(catalog_db) as client:
        assert (await client.get("/metrics", headers=BEARER)).status_code == 404


async def test_metrics_endpoint_needs_the_bearer_token(catalog_db: Database) -> None:
    async with metrics_client(catalog_db) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "shopql" not in wrong.text
        assert "shopql_graphql_requests_total" in await scrape(client)


async def test_requests_are_counted_by_operation_and_outcome(catalog_db: Database) -> None:
    async with metrics_client(catalog_db) as client:
        sql_total = 0
        for _ in range(2):
            body = await post(client, LISTING, "Listing")
            assert "errors" not in body
            sql_total += body["extensions"]["sql"]["count"]
        assert "errors" in await post(client, "query Broken { nope }", "Broken")
        await post(client, "{ __typename }")
        # Not a safe identifier: counted as anonymous, never as a label of its own.
        await post(client, f"query {'x' * 65} {{ __typename }}", "x" * 65)
        text = await scrape(client)
    assert metric(text, "shopql_graphql_requests_total", operation="Listing", outcome="ok") == 2
    assert metric(text, "shopql_graphql_requests_total", operation="Broken", outcome="errors") == 1
    anonymous = [
        metric(text, "shopql_graphql_requests_total", operation="anonymous", outcome=o)
        for o in ("ok", "errors")
    ]
    assert sum(anonymous) == 2
    assert "x" * 65 not in text
    assert metric(text, "shopql_graphql_request_duration_seconds_count", operation="Listing") == 2
    assert metric(text, "shopql_sql_statements_per_request_sum", operation="Listing") == sql_total
    assert metric(text, "shopql_sql_seconds_per_request_sum", operation="Listing") > 0
    batches = [
        value
        for (name, _labels), value in samples(text).items()
        if name == "shopql_dataloader_batch_size_count"
    ]
    assert sum(batches) >= 2  # collections (and on SQLite the other relations): batched loads


async def test_each_app_has_its_own_registry(catalog_db: Database) -> None:
    async with metrics_client(catalog_db) as first:
        await post(first, LISTING, "Listing")
        async with metrics_client(catalog_db) as second:
            text = await scrape(second)
    assert metric(text, "shopql_graphql_requests_total", operation="Listing", outcome="ok") == 0


def test_operation_names_are_bounded() -> None:
    metrics = Metrics(max_operations=3)
    for name in ("A", "B", "C", "D", "E"):
        metrics.operation(name).observe("ok", 0.01, 1, 0.001)
    metrics.operation("bad name!").observe("ok", 0.01, 1, 0.001)
    metrics.operation(None).observe("errors", 0.01, 0, 0.0)
    text = metrics.render().decode()
    names = {
        dict(labels)["operation"]
        for (name, labels) in samples(text)
        if name == "shopql_graphql_requests_total"
    }
    assert names == {"A", "B", "C", "other", "anonymous"}
    assert metric(text, "shopql_graphql_requests_total", operation="other", outcome="ok") == 2


def test_subscription_and_webhook_instruments_record_for_the_current_app() -> None:
    metrics = Metrics()
    telemetry.subscription_opened()  # no app current: nothing, no error
    tokens = telemetry.activate(metrics)
    try:
        telemetry.subscription_opened()
        telemetry.subscription_opened()
        telemetry.subscription_closed()
        telemetry.webhook_delivered("delivered")
        telemetry.webhook_delivered("failed")
    finally:
        telemetry.deactivate(tokens)
    telemetry.webhook_delivered("delivered")  # after the request: not counted
    text = metrics.render().decode()
    assert metric(text, "shopql_websocket_subscriptions_active") == 1
    assert metric(text, "shopql_webhook_deliveries_total", outcome="delivered") == 1
    assert metric(text, "shopql_webhook_deliveries_total", outcome="failed") == 1


async def test_checkout_completions_and_rate_limits_are_counted(fresh_db: Database) -> None:
    async with metrics_client(fresh_db, login_max_failures=2) as client:
        gql = caller(client)
        [variant] = await stock_variants(fresh_db, 1)
        checkout = await create_checkout(gql, [(variant, 1)])
        await mutate(gql, ADDRESS_UPDATE, {"id": checkout["id"], "address": US_ADDRESS})
        methods = await shipping_method_ids(gql)
        await mutate(gql, METHOD_UPDATE, {"id": checkout["id"], "method": methods["Standard"]})
        payment = {"gateway": "dummy", "token": "tok_chargeDeclined"}
        declined = await mutate(
            gql, COMPLETE, {"id": checkout["id"], "payment": payment, "key": "k1"}
        )
        assert [e["code"] for e in declined["errors"]] == ["PAYMENT_DECLINED"]
        payment = {"gateway": "dummy", "token": "tok_visa"}
        paid = await mutate(gql, COMPLETE, {"id": checkout["id"], "payment": payment, "key": "k2"})
        assert paid["order"] is not None
        sign_in = """mutation { tokenCreate(email: "nobody@example.com", password: "wrong pass")
          { errors { code } } }"""
        results = [await post(client, sign_in) for _ in range(3)]
        codes = [r["data"]["tokenCreate"]["errors"][0]["code"] for r in results]
        assert codes[-1] == "RATE_LIMITED"
        text = await scrape(client)
    assert metric(text, "shopql_checkout_completions_total", result="completed") == 1
    assert metric(text, "shopql_checkout_completions_total", result="payment_declined") == 1
    assert metric(text, "shopql_rate_limited_total", limiter="accounts") == codes.count(
        "RATE_LIMITED"
    )


# --------------------------------------------------------------------------- access log


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "shopql.access"]  # type: ignore[attr-defined]


async def test_one_access_line_per_request_with_its_facts(
    fresh_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    from accounts_factory import add_user, sign_in

    caplog.set_level(logging.INFO, logger="shopql.access")
    async with make_client(fresh_db) as client:
        user_id = await add_user(fresh_db, "ann@example.com")
        token = (await sign_in(client, "ann@example.com"))["accessToken"]
        caplog.clear()
        response = await client.post(
            "/graphql",
            json={"query": LISTING, "operationName": "Listing"},
            headers={"x-request-id": "req-123", "authorization": f"Bearer {token}"},
        )
        sql_count = response.json()["extensions"]["sql"]["count"]
        await post(client, "query Broken { nope }", "Broken")
        await client.post(
            "/graphql", content=b"{not json", headers={"content-type": "application/json"}
        )
        await client.get("/healthz")
    lines = access_records(caplog)
    assert len(lines) == 3  # the probe is logged at DEBUG only
    listing, broken, bad_json = lines
    assert listing["request_id"] == "req-123" == response.headers["x-request-id"]
    assert listing["method"] == "POST" and listing["path"] == "/graphql"
    assert listing["status"] == 200 and listing["outcome"] == "ok"
    assert listing["operation"] == "Listing" and listing["user_id"] == user_id
    assert listing["sql_count"] == sql_count and listing["duration_ms"] > 0
    assert broken["outcome"] == "errors"
    assert broken["error_codes"] == ["GRAPHQL_VALIDATION_FAILED"]
    assert "user_id" not in broken and re.fullmatch(r"[0-9a-f]{32}", broken["request_id"])
    assert bad_json["status"] == 400 and bad_json["outcome"] == "bad_request"


async def test_the_access_log_can_be_turned_off(
    catalog_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shopql.access")
    async with make_client(catalog_db, access_log=False) as client:
        await post(client, LISTING, "Listing")
    assert access_records(caplog) == []


def test_json_and_text_formatters() -> None:
    record = logging.LogRecord("shopql.access", logging.INFO, __file__, 1, "POST %s", ("/x",), None)
    record.fields = {"request_id": "r1", "status": 200}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "POST /x" and line["level"] == "info"
    assert line["logger"] == "shopql.access" and line["request_id"] == "r1"
    assert line["status"] == 200 and line["ts"].endswith("+00:00")
    text = TextFormatter().format(record)
    assert "INFO shopql.access POST /x request_id=r1 status=200" in text


def test_logging_config_applies_format_level_and_quiet_loggers(restore_logging: None) -> None:
    stream = io.StringIO()
    settings = Settings(secret_key=TEST_SECRET, log_level="DEBUG")
    configure_logging(settings, stream=stream)
    logging.getLogger("shopql.test").debug("hello", extra={"fields": {"k": 1}})
    logging.getLogger("aiosqlite").debug("executing <statement with parameters>")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["msg"], line["k"]) for line in lines] == [("hello", 1)]
    config = logging_config(Settings(secret_key=TEST_SECRET, access_log=False, debug=True))
    assert config["handlers"]["default"]["formatter"] == "text"
    assert config["loggers"]["uvicorn.access"]["level"] == "INFO"


@pytest.mark.parametrize("uvicorn_access_log", [True, False])
def test_uvicorn_no_access_log_keeps_uvicorns_access_log_off(
    restore_logging: None, uvicorn_access_log: bool
) -> None:
    """`uvicorn app:create_app_from_env --factory --no-access-log` (the benchmarks): the
    factory's logging set-up must not turn uvicorn's access log back on; without the flag,
    and with ours off (SHOPQL_ACCESS_LOG=0), uvicorn's access lines are logged."""
    from uvicorn.config import Config

    Config("app:create_app_from_env", access_log=uvicorn_access_log).configure_logging()
    stream = io.StringIO()
    configure_logging(Settings(secret_key=TEST_SECRET, access_log=False), stream=stream)
    access = logging.getLogger("uvicorn.access")
    access.info('127.0.0.1:1 - "POST /graphql HTTP/1.1" 200')
    assert access.hasHandlers() is uvicorn_access_log  # what uvicorn's protocol checks
    assert ("POST /graphql" in stream.getvalue()) is uvicorn_access_log


async def test_logs_never_carry_secrets(fresh_db: Database, restore_logging: None) -> None:
    """A whole customer journey at DEBUG, in both formats: no password, token, email,
    payment token or reset token appears anywhere in the output."""
    stream = io.StringIO()
    configure_logging(Settings(secret_key=TEST_SECRET, log_level="DEBUG"), stream=stream)
    text_handler = logging.StreamHandler(stream)
    text_handler.setFormatter(TextFormatter())
    logging.getLogger().addHandler(text_handler)
    email, password = "Secret.Shopper@Example.org", "my very secret passphrase 42"
    await add_promo(fresh_db, "OPSTEST10")
    async with make_client(fresh_db, debug=False) as client:
        anonymous = caller(client)
        registered = await mutate(
            anonymous,
            """mutation($input: AccountRegisterInput!) { accountRegister(input: $input) {
              user { id } errors { code } } }""",
            {"input": {"email": email, "password": password, "firstName": "Sam"}},
        )
        assert registered["errors"] == []
        tokens = await mutate(
            anonymous,
            """mutation($e: String!, $p: String!) { tokenCreate(email: $e, password: $p) {
              accessToken refreshToken errors { code } } }""",
            {"e": email, "p": password},
        )
        access, refresh = tokens["accessToken"], tokens["refreshToken"]
        gql = caller(client, access)
        address = {**US_ADDRESS, "streetAddress1": "77 Hidden Lane", "phone": "+12025550147"}
        created = await mutate(
            gql,
            """mutation($input: AddressInput!) { addressCreate(input: $input) {
              errors { code } } }""",
            {"input": address},
        )
        assert created["errors"] == []
        [variant] = await stock_variants(fresh_db, 1)
        checkout = await create_checkout(gql, [(variant, 2)], email=None)
        await mutate(gql, ADDRESS_UPDATE, {"id": checkout["id"], "address": address})
        methods = await shipping_method_ids(gql)
        await mutate(gql, METHOD_UPDATE, {"id": checkout["id"], "method": methods["Standard"]})
        promo = await mutate(gql, PROMO_APPLY, {"id": checkout["id"], "code": "OPSTEST10"})
        assert promo["errors"] == []
        payment = {"gateway": "dummy", "token": "tok_visa"}
        key = f"key-{uuid.uuid4().hex}"
        paid = await mutate(gql, COMPLETE, {"id": checkout["id"], "payment": payment, "key": key})
        assert paid["errors"] == [] and paid["order"]["number"]
        refreshed = await mutate(
            anonymous,
            """mutation($t: String!) { tokenRefresh(refreshToken: $t) {
              accessToken refreshToken errors { code } } }""",
            {"t": refresh},
        )
        assert refreshed["errors"] == []
        reset = await mutate(
            anonymous,
            "mutation($e: String!) { requestPasswordReset(email: $e) { errors { code } } }",
            {"e": email},
        )
        assert reset["errors"] == []
        # A wrong password and a bad token: failures are logged too.
        await mutate(
            anonymous,
            """mutation($e: String!, $p: String!) { tokenCreate(email: $e, password: $p) {
              errors { code } } }""",
            {"e": email, "p": password + "x"},
        )
        await client.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"authorization": "Bearer " + access + "x"},
        )
        await client.get(
            "/graphql",
            params={"query": "{ __typename }", "variables": json.dumps({"email": email})},
        )
    async with fresh_db.read() as conn:
        bodies = [row.body for row in await conn.execute(sa.select(mail_outbox.c.body))]
    reset_tokens = re.findall(r"[A-Za-z0-9_\-]{32,}", " ".join(bodies))
    assert reset_tokens
    output = stream.getvalue()
    assert "shopql.access" in output and '"operation"' in output and "user_id=" in output
    secrets = [
        password,
        email,
        email.lower(),
        access,
        refresh,
        refreshed["accessToken"],
        refreshed["refreshToken"],
        "tok_visa",
        key,
        "77 Hidden Lane",
        "+12025550147",
        *reset_tokens,
    ]
    for secret in secrets:
        assert secret not in output, secret


# --------------------------------------------------------------------------- tracing


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def traced_client(db: Database, provider: TracerProvider, **settings: Any) -> httpx.AsyncClient:
    options: dict[str, Any] = {"database_url": db.url, "debug": True, "secret_key": TEST_SECRET}
    options.update(settings)
    app = create_app(Settings(**options), db=db, tracer_provider=provider)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")


async def test_one_span_per_operation_with_sql_children_and_no_field_spans(
    catalog_db: Database, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    search = "zzsecretsearchterm"
    query = """query Listing($s: String) { products(first: 5, search: $s) {
      nodes { id name category { name } images { url } variants { sku } } } }"""
    async with traced_client(catalog_db, provider) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "operationName": "Listing", "variables": {"s": search}},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "x-request-id": "req-9"},
        )
        body = response.json()
        assert "errors" not in body
        response = await client.post(
            "/graphql",
            json={
                "query": LISTING.replace("query Listing", "query Listing2"),
                "operationName": "Listing2",
            },
        )
        second_sql = response.json()["extensions"]["sql"]["count"]
    finished = exporter.get_finished_spans()
    operations = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [s.name for s in operations] == ["query Listing", "query Listing2"]
    first, second = operations
    assert first.context.trace_id == int(trace_id, 16)
    assert first.parent is not None and first.parent.span_id == int(parent_id, 16)
    assert first.attributes["graphql.operation.name"] == "Listing"
    assert first.attributes["graphql.operation.type"] == "query"
    assert first.attributes["shopql.request_id"] == "req-9"
    assert second.parent is None and second.context.trace_id != first.context.trace_id
    sql = [s for s in finished if s.kind is SpanKind.CLIENT]
    # Nothing but the operation spans and one span per SQL statement: no field spans.
    assert len(finished) == len(operations) + len(sql)
    mine = [s for s in sql if s.context.trace_id == first.context.trace_id]
    assert len(mine) == body["extensions"]["sql"]["count"]
    assert len(sql) - len(mine) == second_sql
    for span in mine:
        assert span.parent is not None and span.parent.span_id == first.context.span_id
        statement = span.attributes["db.statement"]
        assert statement and search not in statement
        assert span.name == statement.split()[0].upper()
        assert span.attributes["db.system"] == catalog_db.dialect


async def test_spans_are_named_by_operation_type_and_name(
    fresh_db: Database, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    register = """mutation Register { accountRegister(input: {email: "t@example.com",
      password: "long enough password"}) { errors { code } } }"""
    async with traced_client(fresh_db, provider) as client:
        await post(client, register, "Register")
        await post(client, "{ __typename }")
        await post(client, "query Q { __typename } mutation M { __typename }", "M")
        await client.post("/graphql", content=b"{bad", headers={"content-type": "application/json"})
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == ["mutation Register", "query", "mutation M", "graphql"]
    assert server[0].attributes["graphql.operation.type"] == "mutation"
    assert all(s.status.is_unset for s in server)  # a client's bad request is not our error


async def test_without_tracing_there_are_no_spans(
    catalog_db: Database, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _provider, exporter = spans
    async with make_client(catalog_db) as client:
        await post(client, LISTING, "Listing")
        assert client.app.state.tracing is None  # type: ignore[attr-defined]
    assert exporter.get_finished_spans() == ()


async def test_an_otlp_endpoint_builds_an_exporting_provider(catalog_db: Database) -> None:
    settings = Settings(
        database_url=catalog_db.url, secret_key=TEST_SECRET, otel_endpoint="http://127.0.0.1:9"
    )
    app = create_app(settings, db=catalog_db)
    provider = app.state.tracing.provider
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "shopql"
    provider.shutdown()


async def test_dataloader_batches_are_reported_to_the_current_observer() -> None:
    from models.dataloader import DataLoader, batch_observer

    async def fetch(keys: list[int]) -> list[int]:
        return [k * 2 for k in keys]

    seen: list[tuple[str, int]] = []
    named = DataLoader(fetch, name="double_by_id", max_batch_size=2)
    unnamed = DataLoader(fetch)
    assert await unnamed.load(1) == 2  # no observer: nothing to report, nothing fails
    token = batch_observer.set(lambda name, size: seen.append((name, size)))
    try:
        assert await named.load_many([1, 2, 3]) == [2, 4, 6]
        assert await unnamed.load_many([5, 6]) == [10, 12]
    finally:
        batch_observer.reset(token)
    assert seen == [("double_by_id", 2), ("double_by_id", 1), (unnamed.name, 2)]
    assert unnamed.name.endswith(
        "test_dataloader_batches_are_reported_to_the_current_observer.fetch"
    )
