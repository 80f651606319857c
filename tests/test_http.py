"""The HTTP surface: transports, request IDs, error masking, health checks, debug output,
GraphiQL, CORS and the wire formats of Money and DateTime."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_client

from app import create_app
from models.db import Database
from models.settings import Settings, SettingsError

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
LEAKS = ("SELECT", "FROM products", "Traceback", "no such table")
LEAKS_ANY_CASE = ("sqlite", "asyncpg", "sqlalchemy", "operationalerror")
PRODUCTS_QUERY = "{ products(first: 3) { nodes { id name } } }"


def assert_no_leaks(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, text
    for leak in LEAKS_ANY_CASE:
        assert leak not in text.lower(), text


def lenient(app: Any) -> httpx.AsyncClient:
    """A client that gets a crash back as the 500 a real server would send."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://shop.test")


# --------------------------------------------------------------------------- transports


async def test_post_json_runs_a_query(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": PRODUCTS_QUERY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = json.loads(response.content)
    assert "errors" not in body
    nodes = body["data"]["products"]["nodes"]
    assert len(nodes) == 3 and all(n["id"] and n["name"] for n in nodes)


async def test_get_runs_a_query_with_json_variables(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql",
        params={
            "query": "query($n: Int) { products(first: $n) { nodes { id } } }",
            "variables": json.dumps({"n": 4}),
        },
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "errors" not in body
    assert len(body["data"]["products"]["nodes"]) == 4
    posted = await client.post("/graphql", json={"query": PRODUCTS_QUERY})
    got = await client.get("/graphql", params={"query": PRODUCTS_QUERY})
    assert got.json()["data"] == posted.json()["data"]


@pytest.mark.parametrize(
    ("query", "operation"),
    [
        ("mutation { __typename }", None),
        ("mutation M { __typename }", "M"),
        ("query Q { __typename } mutation M { __typename }", "M"),
    ],
)
async def test_get_refuses_mutations(
    client: httpx.AsyncClient, query: str, operation: str | None
) -> None:
    params = {"query": query} if operation is None else {"query": query, "operationName": operation}
    response = await client.get("/graphql", params=params, headers={"accept": "application/json"})
    if response.status_code == 200:
        body = response.json()
        assert body.get("errors") and body.get("data") is None, body
    else:
        assert 400 <= response.status_code < 500, response.text
        assert "__typename" not in response.text  # nothing was executed


async def test_get_with_unparseable_variables_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": PRODUCTS_QUERY, "variables": "{not json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"query": "{ __typename }"', b"\xff\xfe"])
async def test_post_with_unparseable_json_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "payload",
    [{}, {"variables": {"n": 1}}, {"query": None}, {"query": ""}, {"operationName": "Q"}],
)
async def test_post_without_a_query_is_400(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    response = await client.post("/graphql", json=payload)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"query": 5}, id="query-not-a-string"),
        pytest.param({"query": "{ __typename }", "variables": "x"}, id="variables-a-string"),
        pytest.param({"query": "{ __typename }", "variables": [1]}, id="variables-a-list"),
    ],
)
async def test_post_with_malformed_fields_is_400(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    response = await client.post("/graphql", json=payload)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[]", id="list"),
        pytest.param(b'"{ __typename }"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b"true", id="boolean"),
    ],
)
async def test_post_with_a_json_body_that_is_not_an_object_is_400(
    catalog_db: Database, content: bytes
) -> None:
    app = create_app(Settings(database_url=catalog_db.url, debug=True), db=catalog_db)
    async with lenient(app) as client:
        response = await client.post(
            "/graphql", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text


async def test_response_is_json_with_data(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post("/graphql", json={"query": "{ __typename }"}),
        await client.get(
            "/graphql", params={"query": "{ __typename }"}, headers={"accept": "application/json"}
        ),
        await client.post("/graphql", json={"query": "{ products(first: 101) { totalCount } }"}),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == "application/json"
        body = json.loads(response.content)
        assert isinstance(body, dict) and "data" in body


# --------------------------------------------------------------------------- request IDs


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_given_request_id_is_echoed(client: httpx.AsyncClient, method: str) -> None:
    headers = {"x-request-id": "checkout-7f3a-42", "accept": "application/json"}
    if method == "POST":
        response = await client.post("/graphql", json={"query": PRODUCTS_QUERY}, headers=headers)
    else:
        response = await client.get("/graphql", params={"query": PRODUCTS_QUERY}, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "checkout-7f3a-42"


async def test_request_id_is_generated_when_missing(client: httpx.AsyncClient) -> None:
    ids = [
        (await client.post("/graphql", json={"query": "{ __typename }"})).headers["x-request-id"]
        for _ in range(3)
    ]
    assert all(HEX_ID.match(i) for i in ids), ids
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("r" * 300, id="300-chars"),
        pytest.param("caf\xe9-\xfcber".encode("latin-1"), id="non-ascii"),
    ],
)
async def test_absurd_request_id_is_replaced(client: httpx.AsyncClient, given: str | bytes) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"x-request-id": given}
    )
    assert response.status_code == 200
    assert HEX_ID.match(response.headers["x-request-id"]), response.headers


# --------------------------------------------------------------------------- masked errors


@pytest.fixture
async def empty_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A database with no tables: every catalog query fails inside SQL."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    yield db
    await db.dispose()


@pytest.mark.parametrize("given_id", [None, "trace-abc-123"])
@pytest.mark.parametrize(
    "query",
    [
        "{ products(first: 2) { totalCount nodes { id name } } }",
        '{ product(slug: "anything") { id } }',
        '{ node(id: "UHJvZHVjdDox") { id } }',
        '{ products(search: "shirt") { nodes { id } } }',
    ],
)
async def test_internal_errors_are_masked_and_logged_with_the_request_id(
    empty_db: Database, caplog: pytest.LogCaptureFixture, query: str, given_id: str | None
) -> None:
    headers = {"x-request-id": given_id} if given_id else {}
    with caplog.at_level(logging.ERROR):
        async with make_client(empty_db) as client:
            response = await client.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200
    assert_no_leaks(response.text)
    request_id = response.headers["x-request-id"]
    if given_id:
        assert request_id == given_id
    else:
        assert HEX_ID.match(request_id)
    errors = response.json()["errors"]
    assert len(errors) == 1
    (error,) = errors
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    assert logged[0].levelno >= logging.ERROR
    assert logged[0].exc_info is not None  # operators get the traceback the client did not


@pytest.mark.parametrize("debug", [True, False])
async def test_masking_does_not_depend_on_debug(empty_db: Database, debug: bool) -> None:
    async with make_client(empty_db, debug=debug) as client:
        response = await client.post("/graphql", json={"query": PRODUCTS_QUERY})
    assert_no_leaks(response.text)
    assert response.json()["errors"][0]["message"] == "Internal server error"


# --------------------------------------------------------------------------- health


async def test_healthz_and_readyz_when_the_database_is_up(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


@pytest.fixture
async def unreachable_db() -> AsyncIterator[Database]:
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nope")
    yield db
    await db.dispose()


async def test_readyz_is_503_without_details_when_the_database_is_down(
    unreachable_db: Database,
) -> None:
    async with make_client(unreachable_db) as client:
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    for detail in ("127.0.0.1", "nope", "refused", "errno", "asyncpg", "traceback", "connect"):
        assert detail not in ready.text.lower(), ready.text
    assert health.status_code == 200 and health.json() == {"status": "ok"}


# --------------------------------------------------------------------------- debug


@pytest.mark.parametrize(
    "query", [PRODUCTS_QUERY, "{ __typename }", "{ products(first: 101) { totalCount } }"]
)
async def test_debug_mode_reports_sql_statements(catalog_db: Database, query: str) -> None:
    async with make_client(catalog_db, debug=True) as client:
        body = (await client.post("/graphql", json={"query": query})).json()
    sql = body["extensions"]["sql"]
    assert type(sql["count"]) is int and sql["count"] >= (1 if query == PRODUCTS_QUERY else 0)
    assert isinstance(sql["ms"], int | float) and sql["ms"] >= 0
    if query == "{ __typename }":
        assert sql["count"] == 0


@pytest.mark.parametrize(
    "query", [PRODUCTS_QUERY, "{ products(first: 101) { totalCount } }", "{ nope }"]
)
async def test_no_extensions_without_debug(catalog_db: Database, query: str) -> None:
    async with make_client(catalog_db, debug=False) as client:
        response = await client.post("/graphql", json={"query": query})
    assert response.status_code == 200
    assert "extensions" not in response.json()


# --------------------------------------------------------------------------- GraphiQL


@pytest.mark.parametrize(
    ("settings", "enabled"),
    [
        ({"debug": True}, True),
        ({"debug": False}, False),
        ({"debug": False, "graphiql": True}, True),
        ({"debug": True, "graphiql": False}, False),
    ],
)
async def test_graphiql_is_served_only_when_enabled(
    catalog_db: Database, settings: dict[str, Any], enabled: bool, assets_dir: Path
) -> None:
    async with make_client(catalog_db, **settings) as client:
        response = await client.get("/graphql", headers={"accept": "text/html"})
        api = await client.get(
            "/graphql", params={"query": "{ __typename }"}, headers={"accept": "application/json"}
        )
    if enabled:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "graphiql" in response.text.lower()
    else:
        assert response.status_code == 404
        assert "graphiql" not in response.text.lower()
    assert api.json()["data"] == {"__typename": "Query"}  # the API itself works either way


# --------------------------------------------------------------------------- CORS

SHOP = "https://shop.example"


@pytest.fixture
async def cors_client(catalog_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(catalog_db, cors_origins=(SHOP,)) as client:
        yield client


def preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,authorization",
    }


async def test_cors_preflight_from_an_allowed_origin(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options("/graphql", headers=preflight(SHOP))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers


async def test_cors_request_from_an_allowed_origin_can_read_the_request_id(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"origin": SHOP}
    )
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("origin", ["https://evil.example", "https://shop.example.evil.test"])
async def test_cors_other_origins_get_no_allow_origin(
    cors_client: httpx.AsyncClient, origin: str
) -> None:
    pre = await cors_client.options("/graphql", headers=preflight(origin))
    assert "access-control-allow-origin" not in pre.headers
    assert pre.status_code != 200 or "access-control-allow-credentials" not in pre.headers
    post = await cors_client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"origin": origin}
    )
    assert "access-control-allow-origin" not in post.headers


@pytest.mark.parametrize("origins", [("*",), (SHOP, "*")])
def test_wildcard_cors_origin_is_refused(origins: tuple[str, ...]) -> None:
    with pytest.raises(SettingsError, match="CORS"):
        Settings(debug=True, cors_origins=origins)


# --------------------------------------------------------------------------- wire formats

USD_AMOUNT = re.compile(r"^\d+\.\d{2}$")


async def test_money_and_datetime_formats(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql",
        json={
            "query": "{ products(first: 100) { nodes { createdAt updatedAt"
            " priceRange { start { amount currency } stop { amount currency } }"
            " variants { price { amount currency } } } } }"
        },
    )
    assert b'"amount":"' in response.content  # amounts are JSON strings, never numbers
    nodes = response.json()["data"]["products"]["nodes"]
    assert len(nodes) == 100
    for node in nodes:
        prices = [node["priceRange"]["start"], node["priceRange"]["stop"]]
        prices += [v["price"] for v in node["variants"]]
        for price in prices:
            assert isinstance(price["amount"], str) and USD_AMOUNT.match(price["amount"]), price
            assert price["currency"] == "USD"
        for stamp in (node["createdAt"], node["updatedAt"]):
            parsed = datetime.fromisoformat(stamp)
            assert parsed.utcoffset() is not None, stamp
