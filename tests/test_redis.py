"""Scale-out through Redis (REDIS_URL): events committed by one process reach the
subscribers of every other process, and the login throttle is shared by all of them.

Processes are modelled here by separate apps (separate EventBus, relay, throttle and
Redis client) over one database; tests/test_scale_out.py runs real uvicorn processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from accounts_factory import TOKEN_CREATE, add_user, call, payload_errors, services_of
from conftest import make_client

from models import redis_backend
from models.db import Database
from models.events import ORDER_UPDATED, VARIANT_STOCK_CHANGED, Event, EventBus
from models.settings import Settings, SettingsError


@contextlib.asynccontextmanager
async def relay_on(url: str, channel: str) -> AsyncIterator[tuple[EventBus, Any]]:
    """One 'process': its own bus, Redis client and relay."""
    bus = EventBus()
    client = redis_backend.connect(url)
    relay = redis_backend.RedisEventRelay(bus, client, channel=channel)
    await relay.start()
    try:
        yield bus, relay
    finally:
        await relay.stop()
        await client.aclose()


async def next_event(queue: asyncio.Queue[Event], within: float = 1.0) -> Event:
    return await asyncio.wait_for(queue.get(), within)


async def test_an_event_published_in_one_process_reaches_the_others_once(
    redis_url: str, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}:events"
    async with (
        relay_on(redis_url, channel) as (a, _),
        relay_on(redis_url, channel) as (b, rb),
        a.subscribe() as on_a,
        b.subscribe() as on_b,
    ):
        a.publish([Event(ORDER_UPDATED, {"order_id": 7, "fields": ["status"]})])
        assert await next_event(on_b) == Event(ORDER_UPDATED, {"order_id": 7, "fields": ["status"]})
        assert await next_event(on_a) == Event(ORDER_UPDATED, {"order_id": 7, "fields": ["status"]})
        # Neither process hears the event a second time (A does not get its own echo).
        b.publish([Event(VARIANT_STOCK_CHANGED, {"variant_ids": [1, 2]})])
        assert (await next_event(on_a)).payload == {"variant_ids": [1, 2]}
        assert (await next_event(on_b)).payload == {"variant_ids": [1, 2]}
        await asyncio.sleep(0.2)
        assert on_a.empty() and on_b.empty()
        assert rb.relayed == 1


async def test_malformed_channel_messages_are_ignored_and_the_relay_goes_on(
    redis_url: str, redis_prefix: str
) -> None:
    channel = f"{redis_prefix}:events"
    async with relay_on(redis_url, channel) as (a, _), relay_on(redis_url, channel) as (b, _):
        raw = redis_asyncio.from_url(redis_url)
        try:
            for junk in (
                b"not json",
                b"[]",
                b'{"origin": 5}',
                b'{"origin": "x", "events": [["only-a-name"]]}',
                b'{"origin": "x", "events": [[1, {}]]}',
                b'{"origin": "x", "events": [["name", "not a dict"]]}',
                b"\xff\xfe" * 1000,
            ):
                await raw.publish(channel, junk)
        finally:
            await raw.aclose()
        async with b.subscribe() as on_b:
            a.publish([Event(ORDER_UPDATED, {"order_id": 1, "fields": []})])
            assert (await next_event(on_b)).payload == {"order_id": 1, "fields": []}
            assert on_b.empty()


async def test_other_namespaces_do_not_hear_each_other(redis_url: str, redis_prefix: str) -> None:
    async with (
        relay_on(redis_url, f"{redis_prefix}-a:events") as (a, _),
        relay_on(redis_url, f"{redis_prefix}-b:events") as (b, _),
        b.subscribe() as on_b,
    ):
        a.publish([Event(ORDER_UPDATED, {"order_id": 1, "fields": []})])
        await asyncio.sleep(0.3)
        assert on_b.empty()


async def test_an_unreachable_redis_fails_start_up_loudly() -> None:
    bus = EventBus()
    client = redis_backend.connect("redis://127.0.0.1:1/0")  # nothing listens there
    relay = redis_backend.RedisEventRelay(bus, client)
    try:
        with pytest.raises(RuntimeError, match="did not accept a subscription"):
            await relay.start(subscribe_within=0.5)
    finally:
        await client.aclose()


async def test_redis_throttle_is_a_sliding_window_shared_by_processes(
    redis_url: str, redis_prefix: str
) -> None:
    one, two = redis_backend.connect(redis_url), redis_backend.connect(redis_url)
    prefix = f"{redis_prefix}:throttle:"
    try:
        a = redis_backend.RedisThrottle(one, limit=3, window=0.5, prefix=prefix)
        b = redis_backend.RedisThrottle(two, limit=3, window=0.5, prefix=prefix)
        assert [await a.hit("k"), await b.hit("k"), await a.hit("k")] == [True] * 3
        assert await b.hit("k") is False  # the fourth, whichever process sees it
        assert await a.hit("other key 🙂 ' OR 1=1 --") is True  # keys are independent
        await a.release("k")
        assert await b.hit("k") is True  # one attempt was taken back
        assert await a.hit("k") is False
        await b.forgive("k")
        assert await a.hit("k") is True
        await asyncio.sleep(0.6)  # the window slides: old hits expire
        assert [await b.hit("k") for _ in range(4)] == [True, True, True, False]
        ttl = await one.pttl(prefix + "k")
        assert 0 < ttl <= 500  # keys expire with their window: Redis does not fill up
    finally:
        await one.aclose()
        await two.aclose()


async def test_sign_in_throttling_holds_across_processes(
    fresh_db: Database, redis_url: str, redis_prefix: str
) -> None:
    """Ten wrong passwords spread over two processes lock the account on both."""
    await add_user(fresh_db, "ann@example.com")
    options = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    async with make_client(fresh_db, **options) as a, make_client(fresh_db, **options) as b:
        assert isinstance(services_of(a).login_throttle, redis_backend.RedisThrottle)
        assert services_of(a).login_throttle is not services_of(b).login_throttle
        for i in range(10):
            client = a if i % 2 else b
            body = await call(client, TOKEN_CREATE, {"email": "ann@example.com", "password": "no"})
            assert payload_errors(body, "tokenCreate") == [(None, "INVALID_CREDENTIALS")]
        for client in (a, b):
            body = await call(
                client,
                TOKEN_CREATE,
                {"email": "ann@example.com", "password": "correct horse battery"},
            )
            assert payload_errors(body, "tokenCreate") == [(None, "RATE_LIMITED")]
        for client in (a, b):
            await services_of(client).redis.aclose()


async def test_events_committed_through_one_app_reach_subscribers_of_another(
    fresh_db: Database, redis_url: str, redis_prefix: str
) -> None:
    """The app wiring: REDIS_URL starts the relay in the lifespan; a stock change
    committed through app A is heard on app B's bus (a second process would have its own
    Database; here B gets its own bus to stand for it)."""
    other = Database(fresh_db.url)
    options = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    try:
        async with make_client(fresh_db, **options) as a, make_client(other, **options) as b:
            lifespans = [
                a.app.router.lifespan_context(a.app),
                b.app.router.lifespan_context(b.app),
            ]
            async with lifespans[0], lifespans[1], other.events.subscribe() as on_b:
                fresh_db.events.publish([Event(VARIANT_STOCK_CHANGED, {"variant_ids": [3]})])
                assert (await next_event(on_b)).payload == {"variant_ids": [3]}
    finally:
        await other.dispose()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_url": "http://127.0.0.1:6379"}, "REDIS_URL must start with"),
        ({"redis_prefix": "has space"}, "SHOPQL_REDIS_PREFIX"),
        ({"redis_prefix": "x" * 65}, "SHOPQL_REDIS_PREFIX"),
        ({"redis_prefix": "a\nb"}, "SHOPQL_REDIS_PREFIX"),
    ],
)
def test_bad_redis_settings_are_refused_at_start_up(values: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(debug=True, **values)  # type: ignore[arg-type]


def test_redis_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "SHOPQL_DEBUG": "1",
            "REDIS_URL": "redis://:pw@127.0.0.1:6379/2",
            "SHOPQL_REDIS_PREFIX": "shop-eu",
        }
    )
    assert settings.redis_url == "redis://:pw@127.0.0.1:6379/2"
    assert settings.redis_prefix == "shop-eu"
    assert "pw" not in repr(settings)
