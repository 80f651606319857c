"""A POST of one operation is served by GraphQLApp's direct path (`_serve_post`), beside
strawberry's generic `run`. The two must answer every request the same: status, headers
and body, byte for byte, for good requests and for every kind of bad one."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_client
from starlette.routing import Router
from strawberry.http.async_base_view import AsyncBaseHTTPView

from models.db import Database

LISTING = "query Listing($n: Int) { products(first: $n) { nodes { id name slug } } }"
TWO_OPERATIONS = f"{LISTING} query Other {{ categories(first: 2) {{ nodes {{ name }} }} }}"
JSON = {"content-type": "application/json"}
GRAPHQL_RESPONSE = {**JSON, "accept": "application/graphql-response+json"}
HOSTILE = "'; DROP TABLE products; --\u202e\u0000<script>" + "é" * 2_000


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


APQ = {"persistedQuery": {"version": 1, "sha256Hash": sha(LISTING)}}


# (what, headers, body): run in this order against both paths (persisted queries and the
# login throttle keep state from one request to the next, the same on both sides)
REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("a listing", JSON, body(query=LISTING, variables={"n": 3})),
    ("no variables", JSON, body(query="{ products(first: 2) { nodes { name } } }")),
    ("charset", {"content-type": "application/json; charset=utf-8"}, body(query=LISTING)),
    ("graphql-response", GRAPHQL_RESPONSE, body(query=LISTING, variables={"n": 1})),
    ("named", JSON, body(query=TWO_OPERATIONS, operationName="Other")),
    ("unnamed of two", JSON, body(query=TWO_OPERATIONS)),
    ("unknown name", JSON, body(query=TWO_OPERATIONS, operationName="Nope")),
    ("unknown name, strict", GRAPHQL_RESPONSE, body(query=LISTING, operationName="Nope")),
    ("hostile name", JSON, body(query=TWO_OPERATIONS, operationName=HOSTILE)),
    ("name not a string", JSON, body(query=LISTING, operationName=7)),
    ("syntax error", JSON, body(query="{ products(first: 2) { nodes { name }")),
    ("syntax error, strict", GRAPHQL_RESPONSE, body(query="{ products(")),
    ("validation error", JSON, body(query="{ products(first: 2) { nope } }")),
    ("validation error, strict", GRAPHQL_RESPONSE, body(query="{ nope }")),
    ("wrong variable type", JSON, body(query=LISTING, variables={"n": "three"})),
    (
        "oversized variable",
        JSON,
        b'{"query": "%s", "variables": {"n": 1%s}}' % (LISTING.encode(), b"0" * 40),
    ),
    ("hostile variable", JSON, body(query=LISTING, variables={"n": HOSTILE})),
    ("variables a string", JSON, body(query=LISTING, variables="{}")),
    ("variables a list", JSON, body(query=LISTING, variables=[1])),
    ("query a number", JSON, body(query=5)),
    ("query a list", JSON, body(query=[LISTING])),
    ("query null", JSON, body(query=None)),
    ("no query", JSON, body()),
    ("extensions a string", JSON, body(query=LISTING, extensions="x")),
    ("not JSON", JSON, b"{ products }"),
    ("JSON number", JSON, b"5"),
    ("JSON string", JSON, b'"{ products }"'),
    ("lone surrogate", JSON, b'{"query": "\\ud800"}'),
    ("batch", JSON, orjson.dumps([{"query": LISTING}, {"query": LISTING}])),
    ("empty batch", JSON, b"[]"),
    ("a subscription", JSON, body(query="subscription { orderUpdated(id: 1) { id } }")),
    (
        "a mutation",
        JSON,
        body(
            query='mutation($e: String!) { tokenCreate(email: $e, password: "x") '
            "{ accessToken errors { code field } } }",
            variables={"e": "nobody@example.com"},
        ),
    ),
    (
        "a missing field argument",
        JSON,
        body(query='mutation { tokenCreate(email: "a@b.c") { accessToken } }'),
    ),
    # Automatic persisted queries: a miss, the registration, then the hash alone
    ("persisted: unknown hash", JSON, body(extensions=APQ, variables={"n": 2})),
    ("persisted: registered", JSON, body(query=LISTING, extensions=APQ, variables={"n": 2})),
    ("persisted: hash alone", JSON, body(extensions=APQ, variables={"n": 4})),
    (
        "persisted: wrong hash",
        JSON,
        body(query=LISTING, extensions={"persistedQuery": {"version": 1, "sha256Hash": "0"}}),
    ),
    ("persisted: bad version", JSON, body(extensions={"persistedQuery": {"version": 9}})),
    ("a bad token", {**JSON, "authorization": "Bearer nope"}, body(query="{ me { email } }")),
    ("no viewer", JSON, body(query="{ me { email orders(first: 2) { nodes { id } } } }")),
    ("introspection", JSON, body(query="{ __schema { queryType { name } } }")),
    ("typename", JSON, body(query="{ __typename }")),
    # No HTTP stream transport is configured (subscriptions are WebSocket only): these
    # Accept headers get the plain answer on both paths
    (
        "multipart accept",
        {**JSON, "accept": "multipart/mixed;subscriptionSpec=1.0"},
        body(query=LISTING),
    ),
    ("event-stream accept", {**JSON, "accept": "text/event-stream"}, body(query=LISTING)),
]


@pytest.fixture
async def clients(catalog_db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    async with make_client(catalog_db) as direct, make_client(catalog_db) as generic:
        generic.app.state.graphql.direct_posts = False
        yield direct, generic


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    """Status, headers and body, but for what differs between any two requests: the
    debug extension's SQL time (and so the length), and the date."""
    assert int(response.headers["content-length"]) == len(response.content)
    headers = sorted(
        (k, v) for k, v in response.headers.items() if k not in ("date", "content-length")
    )
    answer = orjson.loads(response.content)
    if isinstance(answer, dict) and "sql" in answer.get("extensions", {}):
        answer["extensions"]["sql"]["ms"] = "(time)"
    # Key order is part of the answer: compare the re-encoded bytes
    return response.status_code, headers, orjson.dumps(answer)


async def test_direct_posts_answer_as_strawberrys_run(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    direct, generic = clients
    statuses = set()
    for index, (what, headers, content) in enumerate(REQUESTS):
        sent = {**headers, "x-request-id": f"direct-posts-{index}"}
        answers = []
        for client in (direct, generic):
            response = await client.post("/graphql", content=content, headers=sent)
            answers.append(_answer(response))
        assert answers[0] == answers[1], what
        statuses.add(answers[0][0])
    # The corpus reaches results, request errors under both media types, and refusals
    assert {200, 400} <= statuses, statuses


async def test_a_post_of_one_operation_skips_strawberrys_run(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single operations take the direct path; a batch and a GET go on through
    strawberry's `run` (a batch with the context the direct path made)."""
    direct, generic = clients
    runs: list[str] = []
    run = AsyncBaseHTTPView.run

    async def counting(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(request.method)
        return await run(self, request, *args, **kwargs)

    monkeypatch.setattr(AsyncBaseHTTPView, "run", counting)
    one = body(query=LISTING, variables={"n": 2})
    for client in (direct, generic):
        assert (await client.post("/graphql", content=one, headers=JSON)).status_code == 200
    assert runs == ["POST"]  # the generic client's only
    runs.clear()
    batch = orjson.dumps([{"query": LISTING}])
    assert (await direct.post("/graphql", content=batch, headers=JSON)).status_code == 400
    assert (await direct.get("/graphql", params={"query": LISTING})).status_code == 200
    assert runs == ["POST", "GET"]


async def test_graphql_requests_skip_starlettes_router_but_not_the_middleware(
    catalog_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP requests to /graphql reach the GraphQL app past Starlette's router (app.ShopApp),
    inside the same middleware (CORS here); other paths go through the router."""
    routed: list[str] = []
    route = Router.__call__

    async def counting(self: Any, scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await route(self, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counting)
    shop = "https://shop.example"
    async with make_client(catalog_db, cors_origins=(shop,)) as client:
        one = body(query=LISTING, variables={"n": 1})
        answered = await client.post("/graphql", content=one, headers={**JSON, "origin": shop})
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == shop
        preflight = await client.options(
            "/graphql",
            headers={"origin": shop, "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == shop
        refused = await client.put("/graphql", content=one, headers=JSON)
        assert refused.status_code == 405 and refused.json()["errors"]
        assert routed == []
        assert (await client.get("/healthz")).status_code == 200
        assert routed == ["/healthz"]
