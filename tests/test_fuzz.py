"""Schema-driven fuzzing: hypothesis-graphql writes valid queries and mutations from the live
schema; the app answers each through HTTP, anonymously and as staff with every permission,
without a 5xx, without INTERNAL_SERVER_ERROR, with only expected top-level error codes, and
without leaving a task running or a connection checked out once it has answered.

Examples are drawn up front (derandomized: every run sends the same operations) and then
sent one by one through one client per database; a failure names the operation and the
response. Anonymous queries read the shared catalog; whatever needs a staff account (or
writes) runs on a private copy. SHOPQL_FUZZ_SCALE=N sends N times as many operations
(default 1: 400 queries and 140 mutations, about a minute per backend).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from datetime import UTC
from typing import Any

import httpx
from accounts_factory import add_user, mint_token
from conftest import make_client
from graphql import GraphQLEnumType, GraphQLSchema
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries

from models.db import Database
from schema import build_schema

SCALE = max(1, int(os.environ.get("SHOPQL_FUZZ_SCALE", "1")))
QUERY_EXAMPLES = 400 * SCALE
MUTATION_EXAMPLES = 140 * SCALE
# Codes a client may see for a valid operation: its own input, auth, or the limits.
EXPECTED_CODES = {
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "RATE_LIMITED",
    "QUERY_TOO_COMPLEX",
    "QUERY_TOO_DEEP",
    "TOO_MANY_ALIASES",
    "TOO_MANY_TOKENS",
}
# The fuzzer spends cost points far faster than any client: rate limiting is tested elsewhere.
FUZZ_SETTINGS: dict[str, Any] = {"rate_limit": 0}


def _gid(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


# IDs: mostly real global IDs of the seeded catalog (so resolvers get past decoding),
# some of the wrong type or unknown, some garbage.
_ID_TYPES = ("Product", "ProductVariant", "Category", "Collection", "ShippingMethod", "User")
_IDS = st.one_of(
    st.builds(_gid, st.sampled_from(_ID_TYPES), st.integers(1, 60)),
    st.builds(_gid, st.sampled_from(("Order", "Checkout", "Address")), st.integers(1, 5)),
    st.text(max_size=12),
).map(nodes.String)
CUSTOM_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "ID": _IDS,
    # page sizes and quantities: mostly in range, sometimes just outside it
    "Int": st.one_of(st.integers(0, 100), st.integers(-2, 1_000)).map(nodes.Int),
    "Decimal": st.decimals(min_value=-10, max_value=10_000, places=2, allow_nan=False).map(
        lambda d: nodes.String(str(d))
    ),
    "DateTime": st.datetimes(timezones=st.just(UTC)).map(lambda d: nodes.String(d.isoformat())),
}


def draw_examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples of `strategy`, the same ones on every run."""
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        drawn.append(example)

    collect()
    return drawn


def _schema() -> GraphQLSchema:
    return build_schema()._schema


def _strategy(make: Callable[..., st.SearchStrategy[Any]], schema: GraphQLSchema) -> Any:
    return make(schema, custom_scalars=CUSTOM_SCALARS)


def _permissions(schema: GraphQLSchema) -> list[str]:
    permission = schema.get_type("Permission")
    assert isinstance(permission, GraphQLEnumType)
    return list(permission.values)


async def _staff_headers(db: Database, schema: GraphQLSchema) -> dict[str, str]:
    user_id = await add_user(
        db, "fuzz-admin@example.com", is_staff=True, permissions=_permissions(schema)
    )
    return {"Authorization": f"Bearer {await mint_token(db, user_id)}"}


async def _send_all(
    client: httpx.AsyncClient, db: Database, operations: list[str], headers: dict[str, str]
) -> dict[str, int]:
    """Sends each operation; returns how many had data, and had each error code."""
    seen: dict[str, int] = {}
    for operation in operations:
        before = asyncio.all_tasks()
        response = await client.post("/graphql", json={"query": operation}, headers=headers)
        context = f"\n{operation}\n-> {response.status_code} {response.text[:2000]}"
        assert response.status_code == 200, context
        body = response.json()
        codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
        assert codes <= EXPECTED_CODES, context
        # Nothing the request started outlives its answer (RequestExecutionContext).
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert not left, f"tasks still running after the response: {left}{context}"
        assert db.checked_out() == 0, f"a connection is still checked out{context}"
        for code in codes:
            seen[code] = seen.get(code, 0) + 1
        if body.get("data") is not None:
            seen["answered"] = seen.get("answered", 0) + 1
    return seen


async def test_generated_queries_never_fail_internally(
    catalog_db: Database, fresh_db: Database
) -> None:
    """Anonymously on the shared catalog, then as staff with every permission (the staff
    account is written, so that half runs on a private copy)."""
    schema = _schema()
    operations = draw_examples(_strategy(queries, schema), QUERY_EXAMPLES)
    assert len(set(operations)) >= QUERY_EXAMPLES * 0.95
    half = len(operations) // 2
    async with make_client(catalog_db, **FUZZ_SETTINGS) as client:
        anonymous = await _send_all(client, catalog_db, operations[:half], {})
    staff_headers = await _staff_headers(fresh_db, schema)
    async with make_client(fresh_db, **FUZZ_SETTINGS) as client:
        staff = await _send_all(client, fresh_db, operations[half:], staff_headers)
    # a fair share are answered, not all refused (limits, input checks)
    assert anonymous.get("answered", 0) > half // 10, anonymous
    assert staff.get("answered", 0) > half // 10, staff


async def test_generated_mutations_never_fail_internally(fresh_db: Database) -> None:
    """Half the mutations anonymously, half as staff, on one private copy of the catalog."""
    schema = _schema()
    operations = draw_examples(_strategy(mutations, schema), MUTATION_EXAMPLES)
    assert len(set(operations)) >= MUTATION_EXAMPLES * 0.95
    half = len(operations) // 2
    staff_headers = await _staff_headers(fresh_db, schema)
    async with make_client(fresh_db, **FUZZ_SETTINGS) as client:
        await _send_all(client, fresh_db, operations[:half], {})
        staff = await _send_all(client, fresh_db, operations[half:], staff_headers)
    assert staff.get("answered", 0) > (len(operations) - half) // 10, staff
