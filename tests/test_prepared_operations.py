"""Known documents run straight on the executor (schema/prepared.py).

The first time a document is sent it takes strawberry's full path (parse, validate, the
extensions' hooks) and enters the document cache; from then on `PreparedOperations`
answers it. Every request below is sent twice, and the two HTTP answers must be the same
(status, content type, body: data, errors, codes, paths) apart from the request ID and
the SQL timing. The second answer must come from the prepared path exactly when the
request is one it handles; the others (a request error, an operation the transport
refuses, a cost over the limit) still get strawberry's answer.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from conftest import make_client

from models.db import Database
from schema.prepared import PreparedOperations

LISTING = "query Few($n: Int) { products(first: $n) { nodes { name slug } totalCount } }"
TWO = """query A { products(first: 1) { nodes { name } } }
query B { categories(first: 2) { nodes { name } } }"""
TOO_COSTLY = """query Many($n: Int) { products(first: $n) {
  nodes { category { products(first: 100) { nodes { name } } } } } }"""
HOSTILE = "x' OR 1=1; -- \u0000 <script>alert(1)</script> \U0001f600" * 20

# (method, body or query string, handled by the prepared path the second time)
REQUESTS: list[tuple[str, dict[str, Any], bool]] = [
    ("POST", {"query": LISTING, "variables": {"n": 3}}, True),
    ("POST", {"query": LISTING, "variables": {"n": 2}}, True),
    ("POST", {"query": LISTING}, True),  # the default page size
    ("POST", {"query": LISTING, "variables": {"n": "three"}}, True),  # a coercion error
    ("POST", {"query": LISTING, "variables": {"n": True}}, True),
    ("POST", {"query": LISTING, "variables": {"n": 10**12}}, True),
    ("POST", {"query": LISTING, "variables": {"n": -1}}, True),  # a field error
    ("POST", {"query": "query P($s: String!) { product(slug: $s) { name } }"}, True),
    (
        "POST",
        {
            "query": "query P($s: String!) { product(slug: $s) { name } }",
            "variables": {"s": HOSTILE},
        },
        True,
    ),
    ("POST", {"query": '{ node(id: "not-an-id") { id } }'}, True),
    ("POST", {"query": "{ me { email } }"}, True),  # UNAUTHENTICATED, data null
    (
        "POST",
        {"query": 'mutation { tokenRevoke(refreshToken: "unknown") { errors { code } } }'},
        True,
    ),
    ("POST", {"query": TWO, "operationName": "B"}, True),
    ("POST", {"query": TWO}, False),  # several operations, no name: a request error
    ("POST", {"query": TWO, "operationName": "C"}, False),  # no such operation
    ("POST", {"query": TOO_COSTLY, "variables": {"n": 50}}, False),  # over the cost limit
    ("POST", {"query": TOO_COSTLY, "variables": {"n": 1}}, True),
    ("POST", {"query": "{ __schema { queryType { name } } }"}, True),
    ("POST", {"query": "{ __typename }", "variables": None, "operationName": None}, True),
    ("GET", {"query": "{ categories(first: 1) { nodes { name } } }"}, True),
    # known from the POST above, but a mutation is refused over GET (405) all the same
    (
        "GET",
        {"query": 'mutation { tokenRevoke(refreshToken: "unknown") { errors { code } } }'},
        False,
    ),  # not over GET
]


def prepared_of(client: httpx.AsyncClient) -> PreparedOperations:
    graphql_app: Any = next(
        route.endpoint
        for route in client.app.routes
        if getattr(route, "path", "") == "/graphql"  # type: ignore[attr-defined]
    )
    prepared = graphql_app.schema.prepared
    assert isinstance(prepared, PreparedOperations)
    return prepared


def normalized(response: httpx.Response) -> tuple[int, str, Any]:
    body = response.json()
    for error in body.get("errors") or ():
        (error.get("extensions") or {}).pop("requestId", None)
    extensions = body.get("extensions") or {}
    if "sql" in extensions:
        extensions["sql"].pop("ms", None)
    return response.status_code, response.headers["content-type"], body


async def send(client: httpx.AsyncClient, method: str, request: dict[str, Any]) -> httpx.Response:
    if method == "GET":
        return await client.get("/graphql", params=request)
    return await client.post(
        "/graphql", content=orjson.dumps(request), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("introspection", [True, False], ids=["introspection", "no-introspection"])
async def test_a_known_document_answers_as_it_did_the_first_time(
    catalog_db: Database, introspection: bool
) -> None:
    async with make_client(catalog_db, introspection=introspection) as client:
        prepared = prepared_of(client)
        for method, request, known in REQUESTS:
            # refused by validation without introspection: never cached
            handled = known and (introspection or "__schema" not in request["query"])
            first = normalized(await send(client, method, request))
            before = prepared.served
            second = normalized(await send(client, method, request))
            assert second == first, (method, request)
            assert prepared.served - before == int(handled), (method, request)


async def test_rate_limits_and_cost_still_apply_to_known_documents(catalog_db: Database) -> None:
    """The prepared path charges the operation's cost like the limits extension does: a
    client over its budget is refused (429) on a known document too."""
    async with make_client(catalog_db, rate_limit=100, rate_limit_burst=100) as client:
        prepared = prepared_of(client)
        request = {"query": LISTING, "variables": {"n": 40}}  # costs 40 points
        codes = [(await send(client, "POST", request)).status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        assert prepared.served >= 1
        body = (await send(client, "POST", request)).json()
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert body["data"] is None


async def test_an_extension_added_later_takes_every_operation_back_to_strawberry(
    catalog_db: Database,
) -> None:
    """The prepared path skips only hooks it knows do nothing for a cached document: with
    any other extension on the schema (added after start-up), strawberry
    runs every operation and the extension's hooks see it."""
    from strawberry.extensions import SchemaExtension

    seen: list[str] = []

    class Watching(SchemaExtension):
        def on_execute(self) -> Any:
            seen.append(self.execution_context.operation_name or "")
            yield

    async with make_client(catalog_db) as client:
        prepared = prepared_of(client)
        request = {"query": LISTING, "variables": {"n": 1}, "operationName": "Few"}
        for _ in range(2):
            assert (await send(client, "POST", request)).status_code == 200
        served = prepared.served
        graphql_app: Any = next(
            route.endpoint
            for route in client.app.routes
            if getattr(route, "path", "") == "/graphql"  # type: ignore[attr-defined]
        )
        schema = graphql_app.schema
        extensions = schema.extensions
        schema.extensions = (*extensions, Watching)
        try:
            body = (await send(client, "POST", request)).json()
        finally:
            schema.extensions = extensions
    assert body["data"]["products"]["nodes"]
    assert seen == ["Few"] and prepared.served == served
