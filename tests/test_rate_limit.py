"""Per-client rate limiting over query-cost points (a leaky bucket): 429 with
RATE_LIMITED and Retry-After, per token vs per address, recovery as the bucket drains,
in process memory and shared through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis_asyncio
from accounts_factory import add_user, client_from, mint_token
from conftest import make_client
from graphql import GraphQLSyntaxError, parse
from prometheus_client.parser import text_string_to_metric_families

from models.db import Database
from models.ratelimit import MemoryRateLimiter, client_key
from models.settings import QueryLimits, Settings, SettingsError
from schema import limits
from schema.limits import count_tokens

# Costs 10 points: a connection of 10 items, each one object.
TEN = "query Ten { products(first: 10) { nodes { name } } }"
ONE = "query One { me { email } }"  # 1 point: one object
METRICS_TOKEN = "metrics-token-0123456789abcdef"


async def post(
    client: httpx.AsyncClient, query: str = TEN, token: str | None = None, **headers: str
) -> httpx.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return await client.post("/graphql", json={"query": query}, headers=headers)


@pytest.fixture(autouse=True)
def short_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pause before refusing a client back too early, shortened where it is not what
    the test is about."""
    monkeypatch.setattr(limits, "TARPIT_SECONDS", 0.05)


def limited(response: httpx.Response) -> bool:
    if response.status_code != 429:
        assert response.status_code == 200, response.text
        assert "errors" not in response.json(), response.text
        return False
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["RATE_LIMITED"]
    assert body.get("data") is None  # nothing ran
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert body["errors"][0]["extensions"]["retryAfter"] == int(retry_after)
    return True


async def test_over_the_limit_answers_429_with_retry_after(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "TARPIT_SECONDS", 1.0)
    # 1 point a second, 30 at once: three 10-point queries, then a 10 s wait.
    async with make_client(fresh_db, rate_limit=60, rate_limit_burst=30) as client:
        assert [limited(await post(client)) for _ in range(3)] == [False, False, False]
        refused = await post(client)
        assert limited(refused) and refused.headers["retry-after"] == "10"
        assert "costs 10 points" in refused.json()["errors"][0]["message"]
        # Back before its Retry-After, even with a cheap operation: refused unparsed,
        # after a pause of a second (the wait left is what Retry-After now says).
        started = time.monotonic()
        again = await post(client, ONE)
        assert limited(again) and time.monotonic() - started >= 0.9
        assert again.headers["retry-after"] in {"8", "9"}


async def test_a_cheaper_operation_may_fit_sooner(fresh_db: Database) -> None:
    async with make_client(fresh_db, rate_limit=60, rate_limit_burst=25) as client:
        assert [limited(await post(client)) for _ in range(2)] == [False, False]
        # 5 points left: the 10-point query is refused, yet the Retry-After it got is
        # what any request of this client is held to.
        refused = await post(client)
        assert limited(refused) and refused.headers["retry-after"] == "5"
        other = client_from(client, "203.0.113.5")
        async with other:
            assert not limited(await post(other, ONE))


async def test_the_bucket_drains_and_the_client_recovers(fresh_db: Database) -> None:
    # 10 points a second, 20 at once: two queries, then one a second.
    async with make_client(fresh_db, rate_limit=600, rate_limit_burst=20) as client:
        assert [limited(await post(client)) for _ in range(2)] == [False, False]
        refused = await post(client)
        assert limited(refused)
        await asyncio.sleep(int(refused.headers["retry-after"]))  # honest: then it fits
        assert not limited(await post(client))
        assert limited(await post(client))


async def test_tokens_and_addresses_have_their_own_buckets(fresh_db: Database) -> None:
    ann = await add_user(fresh_db, "ann@example.com")
    bob = await add_user(fresh_db, "bob@example.com")
    ann_token, bob_token = await mint_token(fresh_db, ann), await mint_token(fresh_db, bob)
    async with make_client(fresh_db, rate_limit=60, rate_limit_burst=20) as home:
        office = client_from(home, "203.0.113.7")
        async with office:
            assert [limited(await post(home)) for _ in range(3)] == [False, False, True]
            # Another address still has its whole bucket...
            assert not limited(await post(office))
            # ...and so has a signed-in user on the exhausted address.
            assert not limited(await post(home, token=ann_token))
            assert not limited(await post(home, token=ann_token))
            assert limited(await post(home, token=ann_token))
            # Ann's bucket follows her token to the other address; Bob's is his own.
            assert limited(await post(office, token=ann_token))
            assert not limited(await post(office, token=bob_token))
            # An invalid token counts as anonymous: the address's bucket.
            assert limited(await post(home, token="not-a-token"))
            # The app never believes X-Forwarded-For itself (uvicorn rewrites the client
            # address only for FORWARDED_ALLOW_IPS proxies).
            assert limited(await post(home, **{"x-forwarded-for": "198.51.100.1"}))


async def test_operations_refused_before_running_cost_ten_points(fresh_db: Database) -> None:
    refused_documents = [
        "query Broken { products(first: 10) {",
        "query Unknown { noSuchField }",
        "query Deep { " + 'category(slug: "a") { parent { ' * 12 + "id" + " }" * 24 + " }",
    ]
    # 1 point a minute: no point comes back while this runs, however slowly (at 60 a
    # minute, a second's delay on a loaded CI machine let the last request through)
    async with make_client(fresh_db, rate_limit=1, rate_limit_burst=40) as client:
        assert not limited(await post(client))
        for document in refused_documents:  # 10 points each: the bucket is empty
            refused = await post(client, document)
            assert refused.status_code == 200 and "errors" in refused.json(), refused.text
        assert limited(await post(client, ONE))
    # A flood of refused documents from one address is cut off.
    async with make_client(fresh_db, rate_limit=60, rate_limit_burst=100) as client:
        answers = [await post(client, refused_documents[0]) for _ in range(12)]
        # The 11th is answered, but its 10 points no longer fit: the 12th is refused.
        assert [a.status_code for a in answers] == [200] * 11 + [429]


async def test_zero_turns_the_limit_off_and_refusals_are_counted(fresh_db: Database) -> None:
    async with make_client(fresh_db, rate_limit=0, rate_limit_burst=1) as client:
        for _ in range(5):
            assert not limited(await post(client))
    options = {"metrics": True, "metrics_token": METRICS_TOKEN}
    async with make_client(fresh_db, rate_limit=60, rate_limit_burst=10, **options) as client:
        assert [limited(await post(client)) for _ in range(3)] == [False, True, True]
        scrape = await client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape.text)
        for sample in family.samples
    }
    assert values[("shopql_rate_limited_total", (("limiter", "graphql"),))] == 2


@contextlib.asynccontextmanager
async def on_redis(db: Database, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """One "process" sharing its buckets through Redis (its client closed at the end)."""
    async with make_client(db, **options) as client:
        try:
            yield client
        finally:
            await client.app.state.services.redis.aclose()


async def test_redis_buckets_are_shared_by_every_process(
    fresh_db: Database, redis_url: str, redis_prefix: str
) -> None:
    options = {
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "rate_limit": 600,
        "rate_limit_burst": 30,
    }
    raw = redis_asyncio.from_url(redis_url)
    try:
        async with on_redis(fresh_db, **options) as a, on_redis(fresh_db, **options) as b:
            other = client_from(b, "203.0.113.9")
            async with other:
                assert not limited(await post(a))
                assert not limited(await post(b))
                assert not limited(await post(a))
                refused = await post(b)  # the same address's bucket, full
                assert limited(refused) and refused.headers["retry-after"] == "1"
                assert not limited(await post(other))  # another address
                await asyncio.sleep(1)  # 10 points a second drain
                assert not limited(await post(a))
        key = f"{redis_prefix}:ratelimit:ip:127.0.0.1"
        assert 0 < await raw.pttl(key) <= 30 / 10 * 1000 + 1000  # gone once drained
        # Concurrent pours are atomic: of 12 simultaneous 10-point queries on a fresh
        # address, exactly 3 fit a 30-point bucket.
        async with on_redis(fresh_db, **{**options, "rate_limit": 60}) as c:
            crowd = client_from(c, "203.0.113.77")
            async with crowd:
                answers = await asyncio.gather(*(post(crowd) for _ in range(12)))
        assert sum(not limited(answer) for answer in answers) == 3
    finally:
        keys = [k async for k in raw.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


async def test_memory_buckets_are_bounded() -> None:
    limiter = MemoryRateLimiter(per_minute=60, burst=10, max_keys=2)
    assert (await limiter.hit("a", 10)).allowed
    assert not (await limiter.hit("a", 1)).allowed
    assert (await limiter.hit("b", 1)).allowed
    assert (await limiter.hit("c", 1)).allowed  # "a" is forgotten first
    assert (await limiter.hit("a", 10)).allowed
    # An operation costing more than the whole bucket runs once the bucket is empty.
    assert (await limiter.hit("d", 500)).allowed
    refused = await limiter.hit("d", 1)
    assert not refused.allowed and refused.retry_after == 1


def test_client_keys() -> None:
    assert client_key(user_id=7, client_ip="10.0.0.1") == "user:7"
    assert client_key(user_id=None, client_ip="10.0.0.1") == "ip:10.0.0.1"
    assert client_key(user_id=None, client_ip="::ffff:10.0.0.1") == "ip:10.0.0.1"
    # An IPv6 client is its /64: one host can hold all of it.
    assert client_key(user_id=None, client_ip="2001:db8:1:2:aaaa::1") == client_key(
        user_id=None, client_ip="2001:db8:1:2:bbbb::2"
    )
    assert client_key(user_id=None, client_ip="2001:db8:1:3::1") != client_key(
        user_id=None, client_ip="2001:db8:1:2::1"
    )
    assert client_key(user_id=None, client_ip="x" * 500) == "ip:" + "x" * 64


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHOPQL_RATE_LIMIT": "lots"}, "SHOPQL_RATE_LIMIT must be a whole number"),
        ({"SHOPQL_RATE_LIMIT": "-1"}, "SHOPQL_RATE_LIMIT must be between 0"),
        ({"SHOPQL_RATE_LIMIT_BURST": "0"}, "SHOPQL_RATE_LIMIT_BURST must be between 1"),
        ({"SHOPQL_RATE_LIMIT_BURST": "1e9"}, "SHOPQL_RATE_LIMIT_BURST must be a whole number"),
        ({"SHOPQL_APQ_TTL": "5"}, "SHOPQL_APQ_TTL must be between 60"),
        ({"SHOPQL_APQ_CACHE_SIZE": "0"}, "SHOPQL_APQ_CACHE_SIZE must be between 1"),
    ],
)
def test_bad_settings_are_refused_at_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"SHOPQL_DEBUG": "1", **env})


def test_the_defaults() -> None:
    settings = Settings.from_env({"SHOPQL_DEBUG": "1"})
    assert (settings.rate_limit, settings.rate_limit_burst) == (30_000, 10_000)
    off = Settings.from_env({"SHOPQL_DEBUG": "1", "SHOPQL_RATE_LIMIT": "0"})
    assert off.rate_limit == 0


# --------------------------------------------------------------------------- cheap refusals


def _parser_tokens(document: str) -> int:
    """The token count graphql-core's parser holds the document to (the smallest
    max_tokens it parses with)."""
    for limit in range(1, 5000):
        try:
            parse(document, max_tokens=limit)
        except GraphQLSyntaxError as error:
            assert "tokens" in error.message, error.message
            continue
        return limit
    raise AssertionError("not parsed")


@pytest.mark.parametrize(
    "document",
    [
        *(p.read_text() for p in sorted(Path(__file__).parent.glob("clients/*/*.graphql"))),
        '# a comment\n{ a(s: "x\\"y\\\\", t: """block \\""" "q" """, n: -1.5e-3, m: 0) }',
        "{ a, b,,, c } # trailing\n",
        "query Q($v: [Int!] = [1, 2]) { ...F ... on Query { b @skip(if: false) } }",
        '{ a(s: "é ü \\u00e9", o: {k: null, e: ENUM, v: $v}) }',
    ],
)
def test_the_token_count_is_the_parsers(document: str) -> None:
    assert count_tokens(document) == _parser_tokens(document)


async def test_oversized_documents_are_refused_before_parsing(fresh_db: Database) -> None:
    at_limit = "{ " + " ".join(f"a{i}: __typename" for i in range(666)) + " }"  # 2000 tokens
    over = "{ " + " ".join(f"a{i}: __typename" for i in range(1000)) + " }"
    async with make_client(fresh_db, query_limits=QueryLimits(max_aliases=1000)) as client:
        accepted = await post(client, at_limit)
        assert len(accepted.json()["data"]) == 666
        refused = (await post(client, over)).json()
        [error] = refused["errors"]
        assert error["extensions"] == {"code": "TOO_MANY_TOKENS", "tokens": {"limit": 2000}}
        assert "more than 2000 tokens" in error["message"]
