"""The per-process parse/validation cache (schema/document_cache.py): repeated documents
skip parsing and validation, and nothing that failed either step is ever cached."""

from __future__ import annotations

from typing import Any

import httpx
from graphql import parse

from schema.document_cache import MAX_CACHED_TEXT, DocumentCache, DocumentStore


def store_of(client: httpx.AsyncClient) -> DocumentStore:
    graphql_app: Any = next(
        route.endpoint
        for route in client.app.routes
        if getattr(route, "path", "") == "/graphql"  # type: ignore[attr-defined]
    )
    for factory in graphql_app.schema.extensions:
        probe = factory() if callable(factory) and not isinstance(factory, type) else None
        if isinstance(probe, DocumentCache):
            return probe.store
    raise AssertionError("DocumentCache is not installed")


QUERY = "query Few($n: Int) { products(first: $n) { nodes { name } } }"


async def test_a_repeated_document_is_parsed_and_validated_once(client: httpx.AsyncClient) -> None:
    store = store_of(client)
    before = store.hits
    answers = []
    for n in (1, 2, 3):
        response = await client.post("/graphql", json={"query": QUERY, "variables": {"n": n}})
        answers.append(len(response.json()["data"]["products"]["nodes"]))
    assert answers == [1, 2, 3]  # variables still apply to the cached document
    assert store.hits - before == 2


async def test_invalid_documents_are_never_cached(client: httpx.AsyncClient) -> None:
    store = store_of(client)
    size = len(store)
    for bad in ("{ products { nope } }", "{ products(first: 1) {", "{ __typename @skip }"):
        for _ in range(2):
            body = (await client.post("/graphql", json={"query": bad})).json()
            assert body["errors"][0]["extensions"]["code"] in {
                "GRAPHQL_VALIDATION_FAILED",
                "GRAPHQL_PARSE_FAILED",
            }
    assert len(store) == size


async def test_the_abuse_limits_still_apply_to_a_cached_document(
    client: httpx.AsyncClient,
) -> None:
    """Cost depends on variables, so it is checked on every request, cached or not."""
    query = """query Many($n: Int) { products(first: $n) {
      nodes { category { products(first: 20) { nodes { name } } } } } }"""
    ok = (await client.post("/graphql", json={"query": query, "variables": {"n": 2}})).json()
    assert "errors" not in ok
    big = (await client.post("/graphql", json={"query": query, "variables": {"n": 100}})).json()
    assert big["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


def test_the_store_is_bounded_and_keyed_by_text_and_rules() -> None:
    store = DocumentStore(size=2)
    rules_a, rules_b = (object(),), (object(),)
    doc = parse("{ a }")
    store.put("{ a }", rules_a, doc)
    assert store.get("{ a }", rules_a) is doc
    assert store.get("{ a }", rules_b) is None  # validated under other rules: not valid here
    assert store.get("{ a }", (*rules_a,)) is doc  # an equal tuple of the same rules
    assert store.get("{a}", rules_a) is None  # exact text only
    store.put("{ b }", rules_a, parse("{ b }"))
    store.get("{ a }", rules_a)  # "{ a }" is now the most recently used
    store.put("{ c }", rules_a, parse("{ c }"))
    assert len(store) == 2
    assert store.get("{ b }", rules_a) is None  # the least recently used went
    assert store.get("{ a }", rules_a) is doc
    long_text = "{ a }" + " " * MAX_CACHED_TEXT
    store.put(long_text, rules_a, doc)
    assert store.get(long_text, rules_a) is None
