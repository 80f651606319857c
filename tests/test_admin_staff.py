"""Staff accounts (MANAGE_STAFF) and the audit log, through HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from accounts_factory import (
    PASSWORD,
    add_user,
    call,
    count_rows,
    error_codes,
    gid,
    mint_token,
    payload_errors,
    sign_in,
)
from conftest import make_client

from models.accounts.tables import PERMISSIONS, users
from models.audit.tables import audit_log
from models.db import Database

ERRORS = "errors { field code message }"
USER = "id email firstName lastName isStaff isActive permissions"
STAFF_CREATE = f"""mutation($input: StaffCreateInput!) {{
  staffCreate(input: $input) {{ user {{ {USER} }} {ERRORS} }} }}"""
STAFF_UPDATE = f"""mutation($id: ID!, $input: StaffUpdateInput!) {{
  staffUpdate(id: $id, input: $input) {{ user {{ {USER} }} {ERRORS} }} }}"""
STAFF_DELETE = f"""mutation($id: ID!) {{ staffDelete(id: $id) {{ deletedId {ERRORS} }} }}"""
AUDIT = """query($first: Int, $after: String, $filter: AuditLogFilter) {
  auditLog(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { id actor { email } actorEmail action objectType objectId changedFields createdAt }
  } }"""
STAFF_USERS = """query($filter: StaffFilter) {
  staffUsers(first: 50, filter: $filter) { totalCount nodes { email permissions } } }"""
ORDERS = "{ orders(first: 1) { totalCount } }"


@dataclass
class Shop:
    db: Database
    client: httpx.AsyncClient
    admin_id: int
    admin: str  # token of an admin with every permission

    async def call(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/graphql",
            content=json.dumps({"query": query, "variables": variables}),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {token or self.admin}",
            },
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def staff(self, email: str, *permissions: str) -> tuple[int, str]:
        user_id = await add_user(self.db, email, is_staff=True, permissions=permissions)
        return user_id, await mint_token(self.db, user_id)


@pytest.fixture
async def shop(fresh_db: Database) -> AsyncIterator[Shop]:
    admin_id = await add_user(fresh_db, "admin@example.com", is_staff=True, permissions=PERMISSIONS)
    async with make_client(fresh_db) as client:
        yield Shop(fresh_db, client, admin_id, await mint_token(fresh_db, admin_id))


def new_staff(**overrides: Any) -> dict[str, Any]:
    return {
        "email": "Clerk@Example.com",
        "password": PASSWORD,
        "firstName": "Cleo",
        "lastName": "Clerk",
        "permissions": ["MANAGE_ORDERS"],
        **overrides,
    }


async def audit_entries(shop: Shop, **filter_: Any) -> list[dict[str, Any]]:
    body = await shop.call(AUDIT, {"first": 100, "filter": filter_ or None})
    assert "errors" not in body, body
    return list(body["data"]["auditLog"]["nodes"])


async def test_staff_create_makes_a_staff_member_who_can_sign_in_and_is_audited(
    shop: Shop,
) -> None:
    body = await shop.call(STAFF_CREATE, {"input": new_staff()})
    assert payload_errors(body, "staffCreate") == []
    user = body["data"]["staffCreate"]["user"]
    assert user["email"] == "clerk@example.com"
    assert user["isStaff"] is True and user["isActive"] is True
    assert user["permissions"] == ["MANAGE_ORDERS"]
    token = (await sign_in(shop.client, "clerk@example.com"))["accessToken"]
    assert "errors" not in await shop.call(ORDERS, token=token)
    forbidden = await shop.call(STAFF_USERS, token=token)
    assert error_codes(forbidden) == ["FORBIDDEN"]
    [entry] = await audit_entries(shop)
    assert entry["action"] == "staffCreate"
    assert entry["actor"]["email"] == entry["actorEmail"] == "admin@example.com"
    assert entry["objectType"] == "User" and entry["objectId"] == user["id"]
    assert set(entry["changedFields"]) == {
        "email", "password", "permissions", "firstName", "lastName"
    }  # fmt: skip
    # Names of fields only: the stored row holds no password or hash.
    async with shop.db.read() as conn:
        raw = (await conn.execute(sa.select(audit_log))).all()
    assert PASSWORD not in repr(raw) and "argon2" not in repr(raw)


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"email": "not-an-email"}, "input.email", "INVALID"),
        ({"email": "a" * 300 + "@example.com"}, "input.email", "INVALID"),
        ({"email": "admin@EXAMPLE.com"}, "input.email", "UNIQUE"),
        ({"password": "short"}, "input.password", "INVALID"),
        ({"password": "x" * 300}, "input.password", "INVALID"),
        ({"firstName": "x" * 10_000}, "input.firstName", "INVALID"),
        ({"firstName": "Ann\x00"}, "input.firstName", "INVALID"),
        ({"lastName": "Lee\u202e\x1b[31m"}, "input.lastName", "INVALID"),
    ],
)
async def test_staff_create_refuses_bad_input_and_writes_nothing(
    shop: Shop, overrides: dict[str, Any], field: str, code: str
) -> None:
    before = await count_rows(shop.db, users)
    body = await shop.call(STAFF_CREATE, {"input": new_staff(**overrides)})
    assert (field, code) in payload_errors(body, "staffCreate")
    assert body["data"]["staffCreate"]["user"] is None
    assert await count_rows(shop.db, users) == before
    assert await count_rows(shop.db, audit_log) == 0


async def test_a_lone_surrogate_is_refused_as_malformed_json(shop: Shop) -> None:
    response = await shop.client.post(
        "/graphql",
        content=json.dumps(
            {"query": STAFF_CREATE, "variables": {"input": new_staff(lastName="\ud800")}}
        ),
        headers={"content-type": "application/json", "authorization": f"Bearer {shop.admin}"},
    )
    assert response.status_code == 400
    assert await count_rows(shop.db, users) == 1


@pytest.mark.parametrize(
    "variables",
    [
        {"input": {**new_staff(), "permissions": ["SUPERUSER"]}},
        {"input": {**new_staff(), "permissions": None}},
        {"input": {**new_staff(), "email": 42}},
        {"input": {"email": "a@b.co"}},
        {"input": "staff"},
    ],
)
async def test_staff_create_wrong_types_are_rejected_before_running(
    shop: Shop, variables: dict[str, Any]
) -> None:
    body = await shop.call(STAFF_CREATE, variables)
    assert error_codes(body) and set(error_codes(body)) == {"BAD_USER_INPUT"}
    assert await count_rows(shop.db, users) == 1


async def test_granting_and_revoking_permissions_applies_on_the_next_request(shop: Shop) -> None:
    clerk_id, token = await shop.staff("clerk@example.com")
    assert error_codes(await shop.call(ORDERS, token=token)) == ["FORBIDDEN"]
    body = await shop.call(
        STAFF_UPDATE,
        {
            "id": gid("User", clerk_id),
            "input": {"permissions": ["MANAGE_ORDERS"], "firstName": "C"},
        },
    )
    assert payload_errors(body, "staffUpdate") == []
    assert body["data"]["staffUpdate"]["user"]["permissions"] == ["MANAGE_ORDERS"]
    assert "errors" not in await shop.call(ORDERS, token=token)
    body = await shop.call(
        STAFF_UPDATE, {"id": gid("User", clerk_id), "input": {"permissions": []}}
    )
    assert payload_errors(body, "staffUpdate") == []
    assert error_codes(await shop.call(ORDERS, token=token)) == ["FORBIDDEN"]
    entries = await audit_entries(shop, action="staffUpdate")
    assert [e["changedFields"] for e in entries] == [["permissions"], ["firstName", "permissions"]]


async def test_deactivating_staff_signs_them_out_and_blocks_sign_in(shop: Shop) -> None:
    clerk_id, token = await shop.staff("clerk@example.com", "MANAGE_ORDERS")
    body = await shop.call(
        STAFF_UPDATE, {"id": gid("User", clerk_id), "input": {"isActive": False}}
    )
    assert payload_errors(body, "staffUpdate") == []
    assert body["data"]["staffUpdate"]["user"]["isActive"] is False
    assert error_codes(await shop.call(ORDERS, token=token)) == ["UNAUTHENTICATED"]
    refused = await call(
        shop.client,
        'mutation($p: String!) { tokenCreate(email: "clerk@example.com", password: $p) '
        "{ accessToken errors { code } } }",
        {"p": PASSWORD},
    )
    assert refused["data"]["tokenCreate"]["accessToken"] is None


async def test_nobody_removes_their_own_staff_access(shop: Shop) -> None:
    me = gid("User", shop.admin_id)
    for change, field in [
        ({"permissions": ["MANAGE_ORDERS"]}, "input.permissions"),
        ({"isActive": False}, "input.isActive"),
    ]:
        body = await shop.call(STAFF_UPDATE, {"id": me, "input": change})
        assert payload_errors(body, "staffUpdate") == [(field, "PROTECTED")]
    body = await shop.call(STAFF_DELETE, {"id": me})
    assert payload_errors(body, "staffDelete") == [("id", "PROTECTED")]
    # Keeping MANAGE_STAFF while dropping others is fine.
    body = await shop.call(STAFF_UPDATE, {"id": me, "input": {"permissions": ["MANAGE_STAFF"]}})
    assert payload_errors(body, "staffUpdate") == []
    assert await count_rows(shop.db, users) == 1


def _outcome(body: dict[str, Any], field: str) -> str:
    """ "ok", or "refused": by a payload error, or, when the other side's change committed
    before this request even checked its token (its admin deleted or demoted), by an
    UNAUTHENTICATED or FORBIDDEN error."""
    if body.get("errors"):
        codes = {error["extensions"]["code"] for error in body["errors"]}
        assert codes <= {"UNAUTHENTICATED", "FORBIDDEN"}, body["errors"]
        assert body["data"] is None or body["data"].get(field) is None, body
        return "refused"
    return "ok" if not payload_errors(body, field) else "refused"


async def test_two_admins_removing_each_other_at_once_leave_one_in_charge(shop: Shop) -> None:
    """The last MANAGE_STAFF holder rule holds under a race: of two admins demoting (or
    deleting) each other concurrently, exactly one succeeds."""
    for attempt in range(3):
        other_id, other = await shop.staff(f"other{attempt}@example.com", "MANAGE_STAFF")
        # Demote the original admin's rights by the other admin and vice versa, at once;
        # the admin is restored between rounds.
        mine, theirs = await asyncio.gather(
            shop.call(
                STAFF_UPDATE,
                {"id": gid("User", other_id), "input": {"permissions": []}},
                token=shop.admin,
            ),
            shop.call(STAFF_DELETE, {"id": gid("User", shop.admin_id)}, token=other),
        )
        outcomes = sorted([_outcome(mine, "staffUpdate"), _outcome(theirs, "staffDelete")])
        assert outcomes == ["ok", "refused"], (mine, theirs)
        holders = await shop.call(STAFF_USERS, {"filter": {"permissions": ["MANAGE_STAFF"]}})
        if holders.get("errors"):  # the admin was deleted: the other admin now leads
            holders = await shop.call(
                STAFF_USERS, {"filter": {"permissions": ["MANAGE_STAFF"]}}, token=other
            )
            assert holders["data"]["staffUsers"]["totalCount"] == 1
            return
        assert holders["data"]["staffUsers"]["totalCount"] == 1
    # The admin won every round; the refused side was always the deletion.


async def test_staff_delete_removes_the_account_and_keeps_its_audit_trail(shop: Shop) -> None:
    clerk_id, token = await shop.staff("clerk@example.com", "MANAGE_STAFF")
    made = await shop.call(
        STAFF_CREATE, {"input": new_staff(email="temp@example.com")}, token=token
    )
    assert payload_errors(made, "staffCreate") == []
    body = await shop.call(STAFF_DELETE, {"id": gid("User", clerk_id)})
    assert payload_errors(body, "staffDelete") == []
    assert body["data"]["staffDelete"]["deletedId"] == gid("User", clerk_id)
    assert error_codes(await shop.call(ORDERS, token=token)) == ["UNAUTHENTICATED"]
    entries = await audit_entries(shop)
    assert [e["action"] for e in entries] == ["staffDelete", "staffCreate"]
    created = entries[1]
    assert created["actor"] is None and created["actorEmail"] == "clerk@example.com"
    again = await shop.call(STAFF_DELETE, {"id": gid("User", clerk_id)})
    assert payload_errors(again, "staffDelete") == [("id", "NOT_FOUND")]


async def test_customers_are_not_staff_targets(shop: Shop) -> None:
    customer = await add_user(shop.db, "shopper@example.com")
    for query, variables, field in [
        (STAFF_UPDATE, {"id": gid("User", customer), "input": {"firstName": "X"}}, "staffUpdate"),
        (STAFF_DELETE, {"id": gid("User", customer)}, "staffDelete"),
    ]:
        body = await shop.call(query, variables)
        assert payload_errors(body, field) == [("id", "NOT_FOUND")]
    assert await count_rows(shop.db, users) == 2


@pytest.mark.parametrize(
    "bad_id", ["", "nope", gid("Product", 1), gid("User", "x"), "A" * 500, gid("User", 2**40)]
)
async def test_malformed_or_wrong_type_staff_ids(shop: Shop, bad_id: str) -> None:
    for query, variables, field in [
        (STAFF_UPDATE, {"id": bad_id, "input": {"firstName": "X"}}, "staffUpdate"),
        (STAFF_DELETE, {"id": bad_id}, "staffDelete"),
    ]:
        body = await shop.call(query, variables)
        [(path, code)] = payload_errors(body, field)
        assert path == "id" and code in ("INVALID", "NOT_FOUND")
    assert await count_rows(shop.db, audit_log) == 0


async def test_audit_log_pages_and_filters(shop: Shop) -> None:
    made = []
    for n in range(5):
        body = await shop.call(STAFF_CREATE, {"input": new_staff(email=f"s{n}@example.com")})
        made.append(body["data"]["staffCreate"]["user"]["id"])
    await shop.call(STAFF_UPDATE, {"id": made[0], "input": {"lastName": "Renamed"}})
    first = await shop.call(AUDIT, {"first": 4})
    page = first["data"]["auditLog"]
    assert page["totalCount"] == 6 and page["pageInfo"]["hasNextPage"] is True
    assert page["nodes"][0]["action"] == "staffUpdate"
    rest = await shop.call(AUDIT, {"first": 4, "after": page["pageInfo"]["endCursor"]})
    assert [n["objectId"] for n in rest["data"]["auditLog"]["nodes"]] == [made[1], made[0]]
    by_object = await audit_entries(shop, objectId=made[0])
    assert [e["action"] for e in by_object] == ["staffUpdate", "staffCreate"]
    by_actor = await audit_entries(shop, actorId=gid("User", shop.admin_id))
    assert len(by_actor) == 6
    assert await audit_entries(shop, createdGte="2999-01-01T00:00:00+00:00") == []


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"first": 101}, "BAD_USER_INPUT"),
        ({"first": -1}, "BAD_USER_INPUT"),
        ({"after": "garbage"}, "BAD_USER_INPUT"),
        ({"filter": {"objectId": "bad"}}, "BAD_USER_INPUT"),
        ({"filter": {"actorId": gid("Product", 1)}}, "BAD_USER_INPUT"),
        ({"filter": {"action": "x" * 1000}}, "BAD_USER_INPUT"),
        ({"filter": {"action": "drop table; --"}}, "BAD_USER_INPUT"),
        ({"filter": {"createdGte": "yesterday"}}, "BAD_USER_INPUT"),
        ({"filter": {"createdGte": "2026-01-01T00:00:00"}}, "BAD_USER_INPUT"),
    ],
)
async def test_audit_log_bad_arguments(shop: Shop, variables: dict[str, Any], code: str) -> None:
    body = await shop.call(AUDIT, variables)
    assert error_codes(body) == [code], body


async def test_audit_log_and_staff_list_need_manage_staff(shop: Shop) -> None:
    _, orders_clerk = await shop.staff(
        "clerk@example.com", *[p for p in PERMISSIONS if p != "MANAGE_STAFF"]
    )
    customer = await mint_token(shop.db, await add_user(shop.db, "c@example.com"))
    for query in (AUDIT, STAFF_USERS):
        assert error_codes(await call(shop.client, query)) == ["UNAUTHENTICATED"]
        assert error_codes(await shop.call(query, token=customer)) == ["FORBIDDEN"]
        assert error_codes(await shop.call(query, token=orders_clerk)) == ["FORBIDDEN"]


async def test_staff_users_lists_and_searches_staff_only(shop: Shop) -> None:
    await shop.staff("zed@example.com", "MANAGE_ORDERS")
    await add_user(shop.db, "customer@example.com")
    body = await shop.call(STAFF_USERS)
    nodes = body["data"]["staffUsers"]["nodes"]
    assert [n["email"] for n in nodes] == ["admin@example.com", "zed@example.com"]
    found = await shop.call(STAFF_USERS, {"filter": {"search": "ZED"}})
    assert [n["email"] for n in found["data"]["staffUsers"]["nodes"]] == ["zed@example.com"]
    hostile = await shop.call(STAFF_USERS, {"filter": {"search": "%' OR 1=1 --"}})
    assert hostile["data"]["staffUsers"]["nodes"] == []


async def test_audit_log_sql_count_does_not_grow_with_page_size(shop: Shop) -> None:
    for n in range(12):
        await shop.call(STAFF_CREATE, {"input": new_staff(email=f"s{n}@example.com")})
    counts = []
    for size in (1, 12):
        body = await shop.call(AUDIT, {"first": size})
        assert len(body["data"]["auditLog"]["nodes"]) == size
        counts.append(body["extensions"]["sql"]["count"])
    assert counts[0] == counts[1], counts
