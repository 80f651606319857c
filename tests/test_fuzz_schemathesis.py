"""Schemathesis in GraphQL mode: for every root field of the live schema (queries and
mutations), schemathesis writes operations that use it - valid ones, and invalid ones where
the field has arguments to get wrong - and the app answers each through HTTP, anonymously
and as staff with every permission: never a 5xx, never INTERNAL_SERVER_ERROR, only the
error codes a client is expected to handle, and nothing left running after the answer.

Cases are drawn up front (derandomized: every run sends the same operations), then sent
one by one through one client; a failure names the operation and prints a curl command
that replays it. SHOPQL_FUZZ_SCALE=N draws N times as many cases per field.
"""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import schemathesis
from conftest import make_client
from schemathesis import GenerationMode
from schemathesis.generation.case import Case
from test_fuzz import (
    CUSTOM_SCALARS,
    EXPECTED_CODES,
    FUZZ_SETTINGS,
    _staff_headers,
    draw_examples,
)

from models.db import Database
from schema import build_schema

SCALE = max(1, int(os.environ.get("SHOPQL_FUZZ_SCALE", "1")))
VALID_PER_FIELD = 2 * SCALE
INVALID_PER_FIELD = 1 * SCALE
# Invalid operations are refused before anything runs.
EXPECTED = EXPECTED_CODES | {"GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED"}


def _all_cases() -> list[Case]:
    # The shop's own scalars, and IDs that mostly name seeded objects (shared with test_fuzz)
    for name in ("Decimal", "DateTime", "ID"):
        schemathesis.graphql.scalar(name, CUSTOM_SCALARS[name])
    api = schemathesis.graphql.from_file(str(build_schema()))
    cases: list[Case] = []
    for result in api.get_all_operations():
        operation = result.ok()
        cases += draw_examples(operation.as_strategy(), VALID_PER_FIELD)
        # invalid operations (schemathesis falls back to valid ones for a field without
        # arguments to get wrong)
        cases += draw_examples(
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), INVALID_PER_FIELD
        )
    return cases


async def _send(
    client: httpx.AsyncClient, db: Database, case: Case, headers: dict[str, str]
) -> tuple[set[str], bool]:
    """Sends one case; returns its error codes and whether it had data."""
    before = asyncio.all_tasks()
    response = await client.post("/graphql", json={"query": case.body}, headers=headers)
    replay = case.as_curl_command(headers=headers, base_url="http://127.0.0.1:8000/graphql")
    context = (
        f"\n{case.operation.label}: {replay}\n-> {response.status_code} {response.text[:2000]}"
    )
    assert response.status_code < 500, context
    assert response.status_code in (200, 400), context  # 400: refused before it ran
    body = response.json()
    codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
    assert codes <= EXPECTED, context
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert not left, f"tasks still running after the response: {left}{context}"
    assert db.checked_out() == 0, f"a connection is still checked out{context}"
    return codes, body.get("data") is not None


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return _all_cases()


async def test_schemathesis_operations_never_fail_internally(
    cases: list[Case], fresh_db: Database
) -> None:
    assert 150 <= len(cases) <= 400 * SCALE, len(cases)
    assert {c.operation.label.split(".")[0] for c in cases} == {"Query", "Mutation"}
    staff = await _staff_headers(fresh_db, build_schema()._schema)
    answered = {"anonymous": 0, "staff": 0}
    refused_as_invalid = 0
    async with make_client(fresh_db, **FUZZ_SETTINGS) as client:
        for case in cases:
            for who, headers in (("anonymous", {}), ("staff", staff)):
                codes, has_data = await _send(client, fresh_db, case, headers)
                answered[who] += has_data
                refused_as_invalid += "GRAPHQL_VALIDATION_FAILED" in codes
    # Valid operations get answers, invalid ones are told so.
    assert answered["staff"] > len(cases) // 4, answered
    assert answered["anonymous"] > len(cases) // 10, answered
    assert refused_as_invalid > 0
