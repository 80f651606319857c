"""Object-level authorization: every ID-taking account field and mutation, for every viewer
(customer A, customer B, staff with every permission, anonymous) against every owner's
objects. Nobody reads or changes another's objects; the database proves nothing changed."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from accounts_factory import (
    ADDRESS,
    ERRORS,
    add_user,
    address_row,
    call,
    error_codes,
    gid,
    payload_errors,
    sign_in,
)
from conftest import make_client

from models.accounts.tables import PERMISSIONS
from models.db import Database

VIEWERS = ("A", "B", "staff", "anon")
OWNERS = ("A", "B")
MISSING_ADDRESS = gid("Address", 999_999)
CREATE = f"""mutation($input: AddressInput!) {{
  addressCreate(input: $input) {{ address {{ id }} {ERRORS} }} }}"""


def decode_key(global_id: str) -> int:
    return int(base64.b64decode(global_id).decode().partition(":")[2])


@dataclass
class World:
    db: Database
    client: httpx.AsyncClient
    tokens: dict[str, str | None]
    user_ids: dict[str, str]
    address_ids: dict[str, str]
    address_keys: dict[str, int]

    async def call(self, viewer: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return await call(self.client, query, variables, token=self.tokens[viewer])


@pytest.fixture
async def world(fresh_db: Database) -> AsyncIterator[World]:
    users = {
        "A": await add_user(fresh_db, "a@example.com"),
        "B": await add_user(fresh_db, "b@example.com"),
        "staff": await add_user(
            fresh_db, "staff@example.com", is_staff=True, permissions=PERMISSIONS
        ),
    }
    async with make_client(fresh_db) as client:
        tokens: dict[str, str | None] = {"anon": None}
        for name in users:
            tokens[name] = (await sign_in(client, f"{name.lower()}@example.com"))["accessToken"]
        address_ids = {}
        for owner in OWNERS:
            body = await call(
                client,
                CREATE,
                {"input": {**ADDRESS, "firstName": f"Owner {owner}"}},
                token=tokens[owner],
            )
            assert payload_errors(body, "addressCreate") == []
            address_ids[owner] = body["data"]["addressCreate"]["address"]["id"]
        yield World(
            db=fresh_db,
            client=client,
            tokens=tokens,
            user_ids={name: gid("User", key) for name, key in users.items()},
            address_ids=address_ids,
            address_keys={owner: decode_key(i) for owner, i in address_ids.items()},
        )


def may_read(viewer: str, owner: str, kind: str) -> bool:
    """Users see themselves and their addresses; staff who may see every user (MANAGE_STAFF
    or MANAGE_ORDERS) see every user and their address books, as `User.addresses` shows."""
    return viewer in (owner, "staff")


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize("kind", ["User", "Address"])
@pytest.mark.parametrize("field", ["node", "nodes"])
async def test_node_and_nodes_show_only_what_the_viewer_may_see(
    world: World, field: str, kind: str
) -> None:
    ids = world.user_ids if kind == "User" else world.address_ids
    cases = 0
    for viewer in VIEWERS:
        for owner in ids:
            target = ids[owner]
            if field == "node":
                body = await world.call(
                    viewer, "query($id: ID!) { node(id: $id) { id } }", {"id": target}
                )
                found = [body["data"]["node"]]
            else:
                missing = gid(kind, 999_999)
                body = await world.call(
                    viewer,
                    "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                    {"ids": [target, missing]},
                )
                found = body["data"]["nodes"]
                assert found[1] is None
            assert "errors" not in body, body["errors"]
            expected = {"id": target} if may_read(viewer, owner, kind) else None
            assert found[0] == expected, (viewer, owner)
            cases += 1
    print(f"{field}({kind}): {cases} cases")
    assert cases == len(VIEWERS) * len(ids) and len(ids) == (3 if kind == "User" else 2)


async def test_me_lists_only_the_viewers_own_addresses(world: World) -> None:
    query = "{ me { email addresses { id firstName } defaultShippingAddress { id } } }"
    cases = 0
    for viewer in VIEWERS:
        body = await world.call(viewer, query, {})
        assert "errors" not in body, body["errors"]
        me = body["data"]["me"]
        if viewer == "anon":
            assert me is None
        else:
            own = world.address_ids.get(viewer)
            assert me["email"] == f"{viewer.lower()}@example.com"
            assert me["addresses"] == ([{"id": own, "firstName": f"Owner {viewer}"}] if own else [])
            assert me["defaultShippingAddress"] == ({"id": own} if own else None)
        cases += 1
    print(f"me.addresses: {cases} cases")
    assert cases == len(VIEWERS)


# --------------------------------------------------------------------------- mutations

UPDATE = f"""mutation($id: ID!, $input: AddressInput!) {{
  addressUpdate(id: $id, input: $input) {{ address {{ id city }} {ERRORS} }} }}"""
DELETE = f"mutation($id: ID!) {{ addressDelete(id: $id) {{ address {{ id }} {ERRORS} }} }}"
MUTATIONS = {
    "addressUpdate": (UPDATE, {"input": {**ADDRESS, "city": "Taken Over"}}),
    "addressDelete": (DELETE, {}),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
async def test_nobody_changes_anothers_address(world: World, mutation: str) -> None:
    query, extra = MUTATIONS[mutation]
    cases = 0
    for owner in OWNERS:
        key = world.address_keys[owner]
        before = await address_row(world.db, key)
        # The owner goes last: until then the address must stay exactly as it was.
        for viewer in sorted(VIEWERS, key=lambda v: v == owner):
            body = await world.call(viewer, query, {"id": world.address_ids[owner], **extra})
            cases += 1
            if viewer == "anon":
                assert body["data"] is None and error_codes(body) == ["UNAUTHENTICATED"]
            elif viewer != owner:
                assert payload_errors(body, mutation) == [("id", "NOT_FOUND")], viewer
                assert body["data"][mutation]["address"] is None
            else:
                assert payload_errors(body, mutation) == []
                assert body["data"][mutation]["address"]["id"] == world.address_ids[owner]
                break
            assert await address_row(world.db, key) == before, (viewer, owner)
        after = await address_row(world.db, key)
        if mutation == "addressDelete":
            assert after is None
        else:
            assert after is not None and after["city"] == "Taken Over"
    # A well-formed ID of an address that does not exist: NOT_FOUND for everyone signed in.
    for viewer in VIEWERS:
        body = await world.call(viewer, query, {"id": MISSING_ADDRESS, **extra})
        cases += 1
        if viewer == "anon":
            assert error_codes(body) == ["UNAUTHENTICATED"]
        else:
            assert payload_errors(body, mutation) == [("id", "NOT_FOUND")]
    print(f"{mutation}: {cases} cases")
    assert cases == len(VIEWERS) * (len(OWNERS) + 1)


# --------------------------------------------------------------------------- malformed IDs

BAD_IDS = {
    "not-base64": "not an id!",
    "empty": "",
    "no-type": gid("", 1),
    "unknown-type": gid("Nope", 1),
    "non-numeric-key": gid("Address", "abc"),
    "negative-key": gid("Address", -1),
    "zero-key": gid("Address", 0),
    "padded-key": gid("Address", "01"),
    "huge-key": gid("Address", 2**70),
    "300-chars": "QWRkcmVzczox" * 25,
}
WRONG_TYPE_IDS = {"product-id": gid("Product", 1), "user-id": gid("User", 1)}


async def test_a_malformed_or_wrong_type_id_is_invalid_in_mutations(world: World) -> None:
    before = [await address_row(world.db, key) for key in world.address_keys.values()]
    cases = 0
    for bad, value in {**BAD_IDS, **WRONG_TYPE_IDS}.items():
        for mutation, (query, extra) in MUTATIONS.items():
            body = await world.call("A", query, {"id": value, **extra})
            assert payload_errors(body, mutation) == [("id", "INVALID")], (bad, mutation)
            assert body["data"][mutation]["address"] is None
            cases += 1
    assert [await address_row(world.db, key) for key in world.address_keys.values()] == before
    print(f"malformed IDs in mutations: {cases} cases")
    assert cases == 2 * (len(BAD_IDS) + len(WRONG_TYPE_IDS))


async def test_a_malformed_id_is_bad_user_input_in_node(world: World) -> None:
    cases = 0
    for bad, value in BAD_IDS.items():
        for query, variables, data in [
            ("query($id: ID!) { node(id: $id) { id } }", {"id": value}, {"node": None}),
            (
                "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                {"ids": [world.address_ids["A"], value]},
                None,
            ),
        ]:
            body = await world.call("A", query, variables)
            assert body["data"] == data, (bad, query)
            assert error_codes(body) == ["BAD_USER_INPUT"], (bad, query)
            cases += 1
    print(f"malformed IDs in node/nodes: {cases} cases")
    assert cases == 2 * len(BAD_IDS)
