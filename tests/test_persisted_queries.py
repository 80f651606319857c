"""Automatic persisted queries (Apollo's protocol) over POST and GET: miss, register,
hit; refused registrations store nothing; the store in memory and in Redis; and the real
@apollo/client against a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis_asyncio
import uvicorn
from conftest import TEST_SECRET, make_client
from node_clients import CLIENTS, install_node_clients

from app import create_app
from models.db import Database
from models.settings import QueryLimits, Settings

LISTING = "query Listing($n: Int) { products(first: $n) { nodes { name } } }"
OTHER = "query Other { products(first: 1) { nodes { slug } } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(digest: str, version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": digest}}


async def hashed_get(
    client: httpx.AsyncClient, digest: str, variables: dict[str, Any] | None = None, **params: str
) -> httpx.Response:
    query = {"extensions": json.dumps(apq(digest)), **params}
    if variables is not None:
        query["variables"] = json.dumps(variables)
    # Apollo Client sends `accept: */*`: a hashed GET must run, not open GraphiQL.
    return await client.get("/graphql", params=query, headers={"accept": "*/*"})


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", ())]


def not_found(response: httpx.Response) -> bool:
    body = response.json()
    return body.get("errors", [{}])[0].get("message") == "PersistedQueryNotFound" and codes(
        body
    ) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_miss_register_then_hit_over_get_and_post(catalog_db: Database) -> None:
    digest = sha(LISTING)
    async with make_client(catalog_db) as client:
        miss = await hashed_get(client, digest, {"n": 2}, operationName="Listing")
        assert miss.status_code == 200 and not_found(miss), miss.text
        assert "data" not in miss.json() or miss.json()["data"] is None

        registered = await client.post(
            "/graphql", json={"query": LISTING, "variables": {"n": 2}, "extensions": apq(digest)}
        )
        assert registered.status_code == 200
        names = [p["name"] for p in registered.json()["data"]["products"]["nodes"]]
        assert len(names) == 2

        hit = await hashed_get(client, digest, {"n": 2}, operationName="Listing")
        assert hit.status_code == 200, hit.text
        assert [p["name"] for p in hit.json()["data"]["products"]["nodes"]] == names
        # Other variables, same document; and by POST with the hash only.
        posted = await client.post(
            "/graphql", json={"variables": {"n": 3}, "extensions": apq(digest.upper())}
        )
        assert len(posted.json()["data"]["products"]["nodes"]) == 3
        # documentId names the same stored document (with or without "sha256:").
        for document_id in (f"sha256:{digest}", digest):
            by_id = await client.post(
                "/graphql", json={"documentId": document_id, "variables": {"n": 1}}
            )
            assert len(by_id.json()["data"]["products"]["nodes"]) == 1, by_id.text
        # An unrelated hash still misses.
        assert not_found(await hashed_get(client, sha(OTHER)))


async def test_a_hash_that_does_not_match_its_query_is_refused_and_nothing_stored(
    fresh_db: Database,
) -> None:
    async with make_client(fresh_db) as client:
        wrong = await client.post(
            "/graphql", json={"query": LISTING, "extensions": apq(sha(OTHER))}
        )
        body = wrong.json()
        assert codes(body) == ["BAD_USER_INPUT"]
        assert "does not match" in body["errors"][0]["message"]
        assert body.get("data") is None  # nothing ran
        # Neither hash now names the listing.
        assert not_found(await hashed_get(client, sha(OTHER)))
        assert not_found(await hashed_get(client, sha(LISTING)))


@pytest.mark.parametrize(
    ("extensions", "fragment"),
    [
        ({"persistedQuery": "abc"}, "must be an object"),
        ({"persistedQuery": [1]}, "must be an object"),
        ({"persistedQuery": 7}, "must be an object"),
        (apq(sha(LISTING), version=2), "version must be 1"),
        (apq(sha(LISTING), version="1"), "version must be 1"),
        (apq(sha(LISTING), version=True), "version must be 1"),
        (apq(sha(LISTING), version=1.0), "version must be 1"),
        ({"persistedQuery": {"sha256Hash": sha(LISTING)}}, "version must be 1"),
        ({"persistedQuery": {"version": 1}}, "sha256Hash must be"),
        (apq(12345), "sha256Hash must be"),  # type: ignore[arg-type]
        (apq(""), "sha256Hash must be"),
        (apq("g" * 64), "sha256Hash must be"),
        (apq("a" * 63), "sha256Hash must be"),
        (apq("a" * 65), "sha256Hash must be"),
        (apq("a" * 100_000), "sha256Hash must be"),
        (apq("'; DROP TABLE products; --"), "sha256Hash must be"),
        (apq("../../../etc/passwd" + "a" * 45), "sha256Hash must be"),
        (apq("\u0000" * 64), "sha256Hash must be"),
        (apq("<script>alert(1)</script>"), "sha256Hash must be"),
        (apq("\u202e" * 64), "sha256Hash must be"),
    ],
)
async def test_malformed_persisted_query_extensions_are_refused_clearly(
    fresh_db: Database, extensions: dict[str, Any], fragment: str
) -> None:
    async with make_client(fresh_db) as client:
        for body in ({"extensions": extensions}, {"query": LISTING, "extensions": extensions}):
            response = await client.post(
                "/graphql", content=json.dumps(body), headers={"content-type": "application/json"}
            )
            result = response.json()
            assert codes(result) == ["BAD_USER_INPUT"], response.text
            assert fragment in result["errors"][0]["message"]
            assert result.get("data") is None
        # The query text sent along was not stored under its hash.
        assert not_found(await hashed_get(client, sha(LISTING)))


@pytest.mark.parametrize(
    "document_id",
    [12345, ["a"], {"id": "x"}, True, "", "a" * 129, "'; DROP TABLE x; --", "<script>", "é" * 10],
)
async def test_malformed_document_ids_are_refused_clearly(
    fresh_db: Database, document_id: Any
) -> None:
    async with make_client(fresh_db) as client:
        response = await client.post("/graphql", json={"documentId": document_id})
        body = response.json()
        assert codes(body) == ["BAD_USER_INPUT"], response.text
        assert "documentId" in body["errors"][0]["message"]


async def test_wrong_types_around_the_extension_are_refused(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        for extensions in ('"persistedQuery"', "[1, 2]", "5"):
            response = await client.post(
                "/graphql",
                content=f'{{"query": "{{ __typename }}", "extensions": {extensions}}}',
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 400, response.text
            assert "extensions" in response.text
        surrogate = '{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "\\ud800"}}}'
        lone = await client.post(
            "/graphql", content=surrogate, headers={"content-type": "application/json"}
        )
        assert lone.status_code == 400 and "JSON" in lone.text
        bad_get = await client.get(
            "/graphql", params={"extensions": "{not json"}, headers={"accept": "*/*"}
        )
        assert bad_get.status_code == 400
        # No hash and no query: a clear refusal, not GraphiQL.
        empty = await client.post("/graphql", json={"extensions": {}})
        assert empty.status_code == 400


async def test_documents_that_fail_parsing_validation_or_limits_are_not_stored(
    fresh_db: Database,
) -> None:
    deep = "query Deep { " + 'category(slug: "a") { parent { ' * 12 + "id" + " }" * 24 + " }"
    aliases = "query A { " + " ".join(f"a{i}: __typename" for i in range(20)) + " }"
    costly = "query C { a: products(first: 100) { nodes { variants { sku } category { name } } } }"
    oversized = "query Big { products(first: 1) { nodes { name } } }" + " " * 70_000
    refused = {
        "query Broken { products(first: 1) { nodes { name }": "GRAPHQL_PARSE_FAILED",
        "query Unknown { noSuchField }": "GRAPHQL_VALIDATION_FAILED",
        deep: "QUERY_TOO_DEEP",
        aliases: "TOO_MANY_ALIASES",
        costly: "QUERY_TOO_COMPLEX",
    }
    limits = QueryLimits(max_cost=150)
    async with make_client(fresh_db, query_limits=limits, max_body_bytes=200_000) as client:
        for query, code in refused.items():
            response = await client.post(
                "/graphql", json={"query": query, "extensions": apq(sha(query))}
            )
            assert code in codes(response.json()), (code, response.text)
            assert not_found(await hashed_get(client, sha(query))), code
        # An oversized document runs (it is within the token limit) but is not stored.
        big = await client.post(
            "/graphql", json={"query": oversized, "extensions": apq(sha(oversized))}
        )
        assert "errors" not in big.json() and "products" in big.json()["data"], big.text
        assert not_found(await hashed_get(client, sha(oversized)))


async def test_hashed_get_runs_queries_only(fresh_db: Database) -> None:
    mutation = 'mutation M { tokenRevoke(refreshToken: "nope") { errors { code } } }'
    async with make_client(fresh_db) as client:
        first = await client.post(
            "/graphql", json={"query": mutation, "extensions": apq(sha(mutation))}
        )
        assert first.json()["data"]["tokenRevoke"] is not None
        over_get = await hashed_get(client, sha(mutation))
        assert over_get.status_code in (400, 405), over_get.text
        assert "data" not in over_get.json() or over_get.json()["data"] is None
        # Over POST the stored mutation runs by hash.
        again = await client.post("/graphql", json={"extensions": apq(sha(mutation))})
        assert again.json()["data"]["tokenRevoke"] is not None


async def test_the_memory_store_is_bounded(fresh_db: Database) -> None:
    documents = [f"query Q{i} {{ __typename }}" for i in range(3)]
    async with make_client(fresh_db, apq_cache_size=2) as client:
        for document in documents:
            await client.post(
                "/graphql", json={"query": document, "extensions": apq(sha(document))}
            )
        assert not_found(await hashed_get(client, sha(documents[0])))  # least recently used
        for document in documents[1:]:
            hit = await hashed_get(client, sha(document))
            assert hit.json()["data"] == {"__typename": "Query"}


@contextlib.asynccontextmanager
async def redis_client_app(db: Database, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """One "process" on Redis; its Redis client closed at the end (the lifespan would)."""
    async with make_client(db, **options) as client:
        try:
            yield client
        finally:
            await client.app.state.services.redis.aclose()


async def test_redis_store_is_shared_by_processes_and_expires(
    fresh_db: Database, redis_url: str, redis_prefix: str
) -> None:
    options = {"redis_url": redis_url, "redis_prefix": redis_prefix, "apq_ttl": 120}
    digest = sha(LISTING)
    raw = redis_asyncio.from_url(redis_url)
    try:
        async with (
            redis_client_app(fresh_db, **options) as a,
            redis_client_app(fresh_db, **options) as b,
        ):
            assert not_found(await hashed_get(b, digest))
            await a.post("/graphql", json={"query": LISTING, "extensions": apq(digest)})
            hit = await hashed_get(b, digest, {"n": 1})  # another "process"
            assert "errors" not in hit.json() and "products" in hit.json()["data"], hit.text
        assert 0 < await raw.ttl(f"{redis_prefix}:apq:{digest}") <= 120
        # A Redis entry that is not what its hash names never runs.
        poisoned = sha(OTHER)
        await raw.set(f"{redis_prefix}:apq:{poisoned}", b"query Evil { __typename }", ex=60)
        async with redis_client_app(fresh_db, **options) as c:
            assert not_found(await hashed_get(c, poisoned))
    finally:
        keys = [k async for k in raw.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


# --------------------------------------------------------------------------- Apollo Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """ASGI wrapper noting each /graphql request: (method, sent query text?, sent hash?)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, bool, bool]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/graphql":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if scope["method"] == "GET":
            params = httpx.QueryParams(scope["query_string"].decode())
            sent: dict[str, Any] = {
                "query": params.get("query"),
                "extensions": params.get("extensions"),
            }
        else:
            sent = json.loads(body or b"{}")
        self.seen.append((scope["method"], bool(sent.get("query")), bool(sent.get("extensions"))))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_apollo_client_misses_retries_with_the_query_then_hits_with_get(
    catalog_db: Database,
) -> None:
    install_node_clients()
    settings = Settings(database_url=catalog_db.url, secret_key=TEST_SECRET, access_log=False)
    recorder = Recorder(create_app(settings, db=catalog_db))
    script = Path(__file__).parent / "clients" / "apollo" / "apq.mjs"
    async with serving(recorder) as base:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(script),
            f"{base}/graphql",
            cwd=CLIENTS,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out + err).decode()
    runs = json.loads(out)
    assert len(runs) == 2
    assert runs[0] == runs[1] and len(runs[0]) == 3 and all(isinstance(n, str) for n in runs[0])
    # Run 1: hashed GET (miss), then POST with the query (stored); run 2: hashed GET (hit).
    assert recorder.seen == [("GET", False, True), ("POST", True, True), ("GET", False, True)]
