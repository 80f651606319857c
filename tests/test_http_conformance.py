"""GraphQL over HTTP to the spec (graphql-http's audit against a real uvicorn) and the
transport limits a hostile client meets: methods, media types, body and query-string
sizes, the operation deadline, introspection, masking, CORS (schema/transport.py,
schema/cors.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_factory import add_user, mint_token
from conftest import TEST_SECRET, DatabaseFactory, make_client
from live_server import live_server
from node_clients import CLIENTS, install_node_clients, run_node_tool

import models.catalog.loaders as catalog_loaders
import resolvers.checkout.cart as checkout_cart
from models.db import Database
from models.settings import Settings, SettingsError

SHOPQL = str(Path(sys.executable).with_name("shopql"))
GR = "application/graphql-response+json"
TYPENAME = {"query": "{ __typename }"}
SHOP = "https://shop.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`shopql serve` as deployed (not debug), introspection on (the audit asks for
    `__type`), on a private copy of the seeded catalog."""
    url = databases.copy()
    env = {"SHOPQL_DEBUG": "0", "SHOPQL_INTROSPECTION": "1", "SHOPQL_WEBHOOK_WORKER": "0"}
    try:
        with live_server(url, tmp_path_factory.mktemp("server"), env=env) as running:
            yield running.base_url
    finally:
        databases.drop(url)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A refusal as every client can read it: JSON GraphQL errors, the code, the ID."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0] in ("application/json", GR)
    assert response.headers.get("x-request-id"), response.headers
    body: dict[str, Any] = response.json()
    assert "data" not in body, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code, body
    assert isinstance(error["message"], str) and error["message"]
    return body


# --------------------------------------------------------------------------- the audit


def test_graphql_http_audit_reports_every_check_ok(server: str) -> None:
    install_node_clients()
    output = run_node_tool(
        ["node", str(CLIENTS / "audit" / "audit.mjs"), f"{server}/graphql"], CLIENTS, 120
    )
    results = json.loads(output.strip().splitlines()[-1])
    failing = [f"{r['id']} {r['name']}: {r['reason']}" for r in results if r["status"] != "ok"]
    assert not failing, f"{len(failing)} of {len(results)} audits not ok:\n" + "\n".join(failing)
    assert len(results) >= 61, len(results)


def test_bodies_over_the_limit_are_refused_over_tcp(server: str) -> None:
    query = json.dumps({"query": "{ __typename }", "variables": {"pad": "x" * 150_000}})

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        data = query.encode()
        for start in range(0, len(data), 16_384):
            yield data[start : start + 16_384]

    with httpx.Client(base_url=server, timeout=30) as client:
        sized = client.post("/graphql", content=query, headers={"content-type": "application/json"})
        chunked = client.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        small = client.post("/graphql", json=TYPENAME)
    assert_error(sized, 413, "PAYLOAD_TOO_LARGE")
    assert_error(chunked, 413, "PAYLOAD_TOO_LARGE")
    assert small.json()["data"] == {"__typename": "Query"}


# --------------------------------------------------------------------------- media types


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (GR, GR),
        (f"{GR}, application/json;q=0.9", GR),
        (f"{GR}, application/json", GR),
        (f"application/json, {GR};q=0.5", "application/json"),
        (f"{GR};q=0.5, */*", "application/json"),
        ("text/html", "application/json"),
        ("application/*", "application/json"),
        (f"{GR};q=nonsense, application/json", "application/json"),
    ],
)
async def test_the_answer_uses_the_media_type_the_client_prefers(
    client: httpx.AsyncClient, accept: str | None, media_type: str
) -> None:
    headers = {"accept": accept} if accept else {}
    response = await client.post("/graphql", json=TYPENAME, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"query": "{"}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ noSuchField }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "query($n: Int!) { products(first: $n) { totalCount } }"}, "BAD_USER_INPUT"),
        (
            {
                "query": "query($n: Int!) { products(first: $n) { totalCount } }",
                "variables": {"n": "x"},
            },
            "BAD_USER_INPUT",
        ),
        (
            {
                "query": "{ products(first: 100) { nodes { category { products(first: 100) "
                "{ nodes { id } } } } } }"
            },
            "QUERY_TOO_COMPLEX",
        ),
    ],
)
async def test_request_errors_are_400_without_data_under_graphql_response_json(
    client: httpx.AsyncClient, payload: dict[str, Any], code: str
) -> None:
    modern = await client.post("/graphql", json=payload, headers={"accept": GR})
    assert modern.status_code == 400, modern.text
    assert modern.headers["content-type"] == GR
    body = modern.json()
    assert "data" not in body and body["errors"][0]["extensions"]["code"] == code, body
    legacy = await client.post("/graphql", json=payload, headers={"accept": "application/json"})
    assert legacy.status_code == 200
    assert legacy.json()["data"] is None
    assert legacy.json()["errors"][0]["extensions"]["code"] == code


async def test_field_errors_keep_data_and_200_under_graphql_response_json(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": '{ shop: __typename product(id: "bm90LWFuLWlk") { id } }'},
        headers={"accept": GR},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"]["shop"] == "Query" and body["errors"][0]["path"] == ["product"]


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize(
    ("query", "operation"),
    [
        ("mutation { __typename }", None),
        ("query Q { __typename } mutation M { __typename }", "M"),
    ],
)
async def test_mutations_over_get_are_405_with_allow_post(
    client: httpx.AsyncClient, query: str, operation: str | None
) -> None:
    params = {"query": query, **({"operationName": operation} if operation else {})}
    response = await client.get("/graphql", params=params, headers={"x-request-id": "get-m-1"})
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"
    assert response.headers["x-request-id"] == "get-m-1"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
async def test_other_methods_are_405_with_allow(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/graphql", json=TYPENAME)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.headers["x-request-id"]
    if method != "HEAD":
        assert_error(response, 405, "METHOD_NOT_ALLOWED")


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "application/json; charset=latin-1",
        "application/graphql",
        "\u00e9vil/\u00fcnicode",
    ],
)
async def test_posts_that_are_not_json_are_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """A cross-site page can send these without a CORS preflight: none of them runs."""
    headers = {"content-type": content_type.encode()} if content_type else {}
    response = await client.post(
        "/graphql", content=b'{"query": "{ __typename }"}', headers=headers
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "Query" not in response.text


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=utf-8", f'{GR}; charset="UTF-8"'],
)
async def test_json_content_types_are_accepted(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await client.post(
        "/graphql", content=json.dumps(TYPENAME), headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"qeury": "{ __typename }"}', id="no-query"),
        pytest.param(b'{"query": ["{ __typename }"]}', id="query-a-list"),
        pytest.param(b'{"query": false}', id="query-false"),
        pytest.param(b'{"query": "{ __typename }", "variables": 0}', id="variables-0"),
        pytest.param(b'{"query": "{ __typename }", "extensions": "x"}', id="extensions-string"),
        pytest.param(b'{"query": "{ __typename }", "operationName": 7}', id="operation-number"),
        pytest.param(b'{"query": "{ __typename }", "operationName": {}}', id="operation-object"),
        pytest.param(b'{"query": "{ __typename }", "operationName": ["a"]}', id="operation-list"),
    ],
)
async def test_malformed_posts_are_400_json_errors(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("query", "operation"),
    [
        ("query A { __typename } query B { __typename }", "C"),
        ("query A { __typename } query B { __typename }", None),  # which one? say it
        ("query A { __typename } mutation B { __typename }", None),
        ("query A { __typename }", "<script>alert(1)</script>" + "\u202e" * 50),
        ("subscription { __typename }", None),
    ],
)
async def test_operations_graphql_refuses_are_validation_errors(
    client: httpx.AsyncClient, query: str, operation: str | None
) -> None:
    """An unknown operationName, or a subscription (WebSocket only), like any validation
    error: 200 with data null for application/json, 400 without data for the modern type."""
    payload = {"query": query, "operationName": operation}
    legacy = await client.post("/graphql", json=payload)
    modern = await client.post("/graphql", json=payload, headers={"accept": GR})
    assert legacy.status_code == 200, legacy.text
    assert legacy.headers["content-type"] == "application/json"
    assert legacy.json()["data"] is None
    assert legacy.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert modern.headers["content-type"] == GR
    assert_error(modern, 400, "GRAPHQL_VALIDATION_FAILED")
    assert "<script>" not in legacy.text + modern.text


async def test_operation_name_picks_one_of_several_operations(client: httpx.AsyncClient) -> None:
    query = "query A { products(first: 1) { nodes { name } } } query B { __typename }"
    body = (await client.post("/graphql", json={"query": query, "operationName": "B"})).json()
    assert body["data"] == {"__typename": "Query"}
    body = (await client.post("/graphql", json={"query": query, "operationName": "A"})).json()
    assert len(body["data"]["products"]["nodes"]) == 1


# --------------------------------------------------------------------------- sizes


async def test_a_body_over_the_limit_is_413_and_a_body_under_it_runs(catalog_db: Database) -> None:
    async with make_client(catalog_db, max_body_bytes=2048) as client:
        fits = await client.post("/graphql", json={**TYPENAME, "extensions": {"p": "x" * 1500}})
        over = await client.post("/graphql", json={**TYPENAME, "extensions": {"p": "x" * 2100}})
    assert fits.json()["data"] == {"__typename": "Query"}
    body = assert_error(over, 413, "PAYLOAD_TOO_LARGE")
    assert "2048" in body["errors"][0]["message"]


async def test_an_endless_chunked_body_is_not_read_past_the_limit(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "{ __typename }", "variables": {"p": "'
        for _ in range(10_000):  # 640 MB if it were all read
            sent += 1
            yield b"x" * 65_536

    response = await client.post(
        "/graphql", content=endless(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert sent <= 3, f"{sent} chunks of 64 KB read for a 100 KB limit"


async def test_a_lying_content_length_is_refused_before_reading(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql",
        content=json.dumps(TYPENAME),
        headers={"content-type": "application/json", "content-length": "10000000"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_get_query_string_over_the_limit_is_414(client: httpx.AsyncClient) -> None:
    fits = await client.get("/graphql", params={"query": "{ __typename }" + " " * 15_000})
    over = await client.get("/graphql", params={"query": "{ __typename }" + " " * 17_000})
    assert fits.json()["data"] == {"__typename": "Query"}
    assert_error(over, 414, "URI_TOO_LONG")


# --------------------------------------------------------------------------- deadline


@pytest.fixture
def slow_variants(catalog_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variants loader holds a connection and hangs (in SQL on PostgreSQL)."""

    async def hang(conn: Any, *, product_ids: list[int]) -> dict[int, Any]:
        if catalog_db.is_sqlite:
            await conn.exec_driver_sql("SELECT 1")
            await asyncio.sleep(60)
        else:
            await conn.exec_driver_sql("SELECT pg_sleep(60)")
        return {}

    monkeypatch.setattr(catalog_loaders.q, "variants_by_product_ids", hang)
    # Variants are read by their loader, not within the product page (PostgreSQL embeds them)
    monkeypatch.setattr(catalog_loaders.q, "embeddable", lambda dialect, selected: frozenset())


async def _busy_sessions(db: Database) -> int:
    if db.is_sqlite:
        return 0
    async with db.read() as conn:
        result = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND (query LIKE '%pg_sleep%' OR state LIKE 'idle in%')"
        )
        return int(result.scalar_one())


@pytest.mark.usefixtures("slow_variants")
async def test_a_slow_operation_is_cancelled_with_request_timeout(
    catalog_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    query = {"query": "{ products(first: 2) { nodes { name variants { sku } } } }"}
    async with make_client(catalog_db, request_timeout=0.3) as client:
        started = time.monotonic()
        legacy = await client.post("/graphql", json=query)
        modern = await client.post("/graphql", json=query, headers={"accept": GR})
        elapsed = time.monotonic() - started
        after = await client.post(
            "/graphql", json={"query": "{ products(first: 1) { totalCount } }"}
        )
    assert elapsed < 5, elapsed
    for response in (legacy, modern):
        assert response.status_code == 504, response.text
        assert response.headers["x-request-id"]
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "REQUEST_TIMEOUT"
        assert "0.3" in error["message"]
    assert "data" not in modern.json()
    assert catalog_db.checked_out() == 0
    for _ in range(100):  # PostgreSQL ends the cancelled statement on its side
        if not await _busy_sessions(catalog_db):
            break
        await asyncio.sleep(0.05)
    assert await _busy_sessions(catalog_db) == 0
    assert after.status_code == 200 and after.json()["data"]["products"]["totalCount"] > 0


async def test_a_slow_mutation_is_cancelled_and_rolled_back(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def checkouts() -> int:
        async with fresh_db.read() as conn:
            return int((await conn.exec_driver_sql("SELECT count(*) FROM checkouts")).scalar_one())

    original = checkout_cart.q.set_line_quantities

    async def hang(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(60)  # inside the transaction, after the checkout row is written

    mutation = {
        "query": 'mutation { checkoutCreate(input: {lines: [], email: "t@example.com"}) '
        "{ checkout { id } errors { code } } }"
    }
    before = await checkouts()
    async with make_client(fresh_db, request_timeout=0.3) as client:
        monkeypatch.setattr(checkout_cart.q, "set_line_quantities", hang)
        timed_out = await client.post("/graphql", json=mutation)
        monkeypatch.setattr(checkout_cart.q, "set_line_quantities", original)
        assert await checkouts() == before  # rolled back
        assert fresh_db.checked_out() == 0
        done = await client.post("/graphql", json=mutation)  # no lock left behind
    assert timed_out.status_code == 504
    assert timed_out.json()["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
    assert done.status_code == 200 and done.json()["data"]["checkoutCreate"]["checkout"]["id"]
    assert await checkouts() == before + 1


# --------------------------------------------------------------------------- introspection

INTROSPECTIONS = [
    "{ __schema { queryType { name } } }",
    '{ __type(name: "Product") { name } }',
    "query { ...F } fragment F on Query { __schema { types { name } } }",
    '{ products(first: 1) { nodes { id } } __type(name: "Query") { name } }',
]


@pytest.mark.parametrize("query", INTROSPECTIONS)
async def test_introspection_is_refused_outside_debug(catalog_db: Database, query: str) -> None:
    async with make_client(catalog_db, debug=False) as client:
        refused = await client.post("/graphql", json={"query": query})
        typename = await client.post("/graphql", json=TYPENAME)
    assert refused.status_code == 200
    body = refused.json()
    assert body["data"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert "Introspection is disabled" in body["errors"][0]["message"]
    assert typename.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    ("settings", "allowed"),
    [
        ({"debug": True}, True),
        ({"debug": False, "introspection": True}, True),
        ({"debug": True, "introspection": False}, False),
    ],
)
async def test_introspection_follows_the_setting(
    catalog_db: Database, settings: dict[str, Any], allowed: bool
) -> None:
    async with make_client(catalog_db, **settings) as client:
        body = (await client.post("/graphql", json={"query": INTROSPECTIONS[0]})).json()
    if allowed:
        assert body["data"] == {"__schema": {"queryType": {"name": "Query"}}}, body
    else:
        assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize(("debug", "suggested"), [(False, False), (True, True)])
async def test_field_suggestions_only_in_debug(
    catalog_db: Database, debug: bool, suggested: bool
) -> None:
    async with make_client(catalog_db, debug=debug) as client:
        body = (await client.post("/graphql", json={"query": "{ product { nmae } }"})).json()
    message = " ".join(e["message"] for e in body["errors"])
    assert "nmae" in message
    assert ("Did you mean" in message) is suggested, message


# --------------------------------------------------------------------------- masking


async def test_a_failure_outside_the_operation_is_masked_with_the_request_id(
    fresh_db: Database, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The database goes away between sign-in and the next request: authenticating the
    token fails before any operation runs."""
    user_id = await add_user(fresh_db, "masked@example.com")
    token = await mint_token(fresh_db, user_id)
    broken = Database(f"sqlite+aiosqlite:///{tmp_path / 'nothing-here.db'}")
    try:
        with caplog.at_level(logging.ERROR):
            async with make_client(broken, debug=False) as client:
                response = await client.post(
                    "/graphql",
                    json={"query": "{ me { email } }"},
                    headers={"authorization": f"Bearer {token}", "x-request-id": "req-masked-1"},
                )
    finally:
        await broken.dispose()
    assert response.status_code == 500, response.text
    text = response.text.lower()
    for leak in ("select", "sqlite", "no such table", "traceback", "sqlalchemy"):
        assert leak not in text, response.text
    error = response.json()["errors"][0]
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-masked-1"}
    assert response.headers["x-request-id"] == "req-masked-1"
    logged = [r for r in caplog.records if "req-masked-1" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, [r.getMessage() for r in caplog.records]


async def test_a_request_refused_before_its_operation_still_settles_its_token_lookup(
    fresh_db: Database, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The token's session lookup starts with the request and is awaited just before the
    operation. A request refused before that (a body that is not JSON) does not leave it
    running: its connection is back when the response is, and a lookup that failed is
    logged with the request ID although the client got its 400."""
    user_id = await add_user(fresh_db, "early@example.com")
    token = await mint_token(fresh_db, user_id)
    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    with caplog.at_level(logging.ERROR):
        async with make_client(fresh_db) as client:
            bad = await client.post("/graphql", content=b"{not json", headers=auth)
            assert bad.status_code == 400, bad.text
            assert fresh_db.checked_out() == 0
            me = await client.post("/graphql", json={"query": "{ me { email } }"}, headers=auth)
            assert me.json()["data"]["me"] == {"email": "early@example.com"}
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        broken = Database(f"sqlite+aiosqlite:///{tmp_path / 'nothing-here.db'}")
        try:
            async with make_client(broken, debug=False) as client:
                bad = await client.post(
                    "/graphql",
                    content=b"{not json",
                    headers={**auth, "x-request-id": "req-early-1"},
                )
        finally:
            await broken.dispose()
    assert bad.status_code == 400, bad.text
    assert "sqlite" not in bad.text.lower()
    logged = [r for r in caplog.records if "req-early-1" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, [r.getMessage() for r in caplog.records]


# --------------------------------------------------------------------------- CORS


@pytest.fixture
async def cors_client(catalog_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(catalog_db, cors_origins=(SHOP, "http://localhost:3000")) as client:
        yield client


def _preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization",
    }


@pytest.mark.parametrize("origin", [SHOP, "http://localhost:3000"])
async def test_allowed_origins_get_origin_and_credentials(
    cors_client: httpx.AsyncClient, origin: str
) -> None:
    pre = await cors_client.options("/graphql", headers=_preflight(origin))
    post = await cors_client.post("/graphql", json=TYPENAME, headers={"origin": origin})
    for response in (pre, post):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "origin" in response.headers["vary"].lower()


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "https://shop.example.evil.test", "http://shop.example", "null"],
)
async def test_other_origins_get_neither_origin_nor_credentials(
    cors_client: httpx.AsyncClient, origin: str
) -> None:
    pre = await cors_client.options("/graphql", headers=_preflight(origin))
    post = await cors_client.post("/graphql", json=TYPENAME, headers={"origin": origin})
    for response in (pre, post):
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
    assert_error(pre, 400, "BAD_REQUEST")
    assert post.json()["data"] == {"__typename": "Query"}  # not a browser: no CORS needed


@pytest.mark.parametrize(
    "raw", ["*", f"{SHOP},*", f"{SHOP}/", "https://Shop.example", "shop.example", "null"]
)
def test_unusable_cors_origins_are_refused_at_start_up(raw: str) -> None:
    with pytest.raises(SettingsError, match="SHOPQL_CORS_ORIGINS"):
        Settings.from_env({"SHOPQL_DEBUG": "1", "SHOPQL_CORS_ORIGINS": raw})


# --------------------------------------------------------------------------- settings


def test_transport_settings_defaults_and_parsing() -> None:
    production = Settings.from_env({"SECRET_KEY": TEST_SECRET})
    assert production.max_body_bytes == 102_400
    assert production.request_timeout == 30
    assert production.introspection_enabled is False
    assert Settings.from_env({"SHOPQL_DEBUG": "1"}).introspection_enabled is True
    tuned = Settings.from_env(
        {
            "SECRET_KEY": TEST_SECRET,
            "SHOPQL_MAX_BODY_BYTES": "2048",
            "SHOPQL_REQUEST_TIMEOUT": "2.5",
            "SHOPQL_INTROSPECTION": "on",
        }
    )
    assert (tuned.max_body_bytes, tuned.request_timeout, tuned.introspection_enabled) == (
        2048,
        2.5,
        True,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHOPQL_MAX_BODY_BYTES", "lots"),
        ("SHOPQL_MAX_BODY_BYTES", "12"),
        ("SHOPQL_MAX_BODY_BYTES", "1e12"),
        ("SHOPQL_MAX_BODY_BYTES", "999999999999999999999"),
        ("SHOPQL_REQUEST_TIMEOUT", "0"),
        ("SHOPQL_REQUEST_TIMEOUT", "-1"),
        ("SHOPQL_REQUEST_TIMEOUT", "nan"),
        ("SHOPQL_REQUEST_TIMEOUT", "inf"),
        ("SHOPQL_REQUEST_TIMEOUT", "30s"),
        ("SHOPQL_INTROSPECTION", "maybe"),
    ],
)
def test_bad_transport_settings_are_refused_at_start_up(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"SHOPQL_DEBUG": "1", name: value})
