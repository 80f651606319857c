"""A request's objects are freed by reference counting as it ends, not left in reference
cycles for the garbage collector.

Cyclic garbage from every request (the context and the request holding each other,
graphql-core's executor and its helpers, a loader's wait and its callback, SQLAlchemy
constructs built per request) made each request leave hundreds of objects behind: the
executor's plans, every DataLoader's futures and records. They triggered most of the
young-generation collections and were promoted into older generations under load, where
collecting them cost several milliseconds per request at concurrency 32 (issue 8).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import checkout_flow as f
import httpx
import pytest
from conftest import make_client

from models.db import Database

PRODUCT = """id name slug priceRange { start { amount currency } stop { amount currency } }
  isAvailable variants { id sku name price { amount currency } quantityAvailable }
  images { url alt } category { id name slug }"""
LISTING = f"{{ products(first: 12) {{ nodes {{ {PRODUCT} }} pageInfo {{ endCursor }} }} }}"
DETAIL = f"query($slug: String!) {{ product(slug: $slug) {{ {PRODUCT} description }} }}"
CATEGORY = f"""query($slug: String!) {{ category(slug: $slug) {{ id name
  children(first: 20) {{ nodes {{ id name slug }} }}
  products(first: 12) {{ nodes {{ {PRODUCT} }} }} }} }}"""
SEARCH = f"query($q: String!) {{ products(first: 12, search: $q) {{ nodes {{ {PRODUCT} }} }} }}"
MY_ORDERS = """{ me { email orders(first: 20) { nodes { id number status paymentStatus
  createdAt total { amount currency } lines { id productName variantName sku quantity
  unitPrice { amount currency } totalPrice { amount currency } } } } } }"""

# Modules whose objects a request creates on the server side (the test's httpx client
# keeps cycles of its own: not the server's)
SERVER_MODULES = ("schema", "models", "resolvers", "graphql", "strawberry", "sqlalchemy",
                  "starlette", "app")  # fmt: skip


@pytest.fixture
async def http(fresh_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fresh_db) as client:
        yield client


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The collector disabled (so nothing is collected behind the test's back), and left as
    it was found."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def server_garbage() -> dict[str, int]:
    """Collect, keeping what was unreachable; the count of each server-side type in it."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(0)
    found: dict[str, int] = {}
    for obj in gc.garbage:
        module = getattr(type(obj), "__module__", "") or ""
        if module.split(".")[0] in SERVER_MODULES:
            name = f"{module}.{type(obj).__qualname__}"
            found[name] = found.get(name, 0) + 1
    gc.garbage.clear()
    gc.collect()  # now freed for good (the saved cycles were still cycles)
    return found


async def test_storefront_requests_leave_no_cyclic_garbage(
    fresh_db: Database, http: httpx.AsyncClient, collector_off: None
) -> None:
    found = await f.stock_variants(fresh_db, 6)
    user_id, customer = await f.add_signed_in_customer(fresh_db, http, "gc@example.com")
    for i in range(3):
        await f.insert_order(
            fresh_db, user_id=user_id, email="gc@example.com",
            lines=[(found[i], 1), (found[i + 1], 2), (found[i + 2], 1)],
        )  # fmt: skip
    anonymous = f.caller(http)
    first = (await anonymous(LISTING))["data"]["products"]["nodes"][0]
    word = first["name"].split()[0]
    requests: list[tuple[Any, str, dict[str, Any]]] = [
        (anonymous, LISTING, {}),
        (anonymous, DETAIL, {"slug": first["slug"]}),
        (anonymous, CATEGORY, {"slug": first["category"]["slug"]}),
        (anonymous, SEARCH, {"q": word}),
        (customer, MY_ORDERS, {}),
    ]
    answers = []
    for gql, query, variables in requests:  # once first: caches fill, loaders import
        answers.append(await gql(query, variables))
    assert answers[3]["data"]["products"]["nodes"], f"nothing matches {word!r}"
    assert len(answers[4]["data"]["me"]["orders"]["nodes"]) == 3
    server_garbage()

    for _ in range(3):
        for gql, query, variables in requests:
            await gql(query, variables)
    left = server_garbage()
    assert left == {}, sorted(left.items(), key=lambda kv: -kv[1])
