"""Bad input through HTTP: a clear error with the right `extensions.code`, HTTP 200, never a
500, never an INTERNAL_SERVER_ERROR, and nothing of the server's internals in the response.

Most cases are sent twice: written into the document as literals (checked while the
document is validated) and as variables (checked while variables are coerced, or by the
resolvers), since the two paths produce different errors.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import CATALOG_PRODUCTS, make_client

from app import create_app
from models.db import Database
from models.settings import Settings

MODES = ["literal", "variables"]
# Internals that must never reach a client. "SELECT" is matched case-sensitively: "select"
# is an ordinary word of validation messages ("must have a selection of subfields").
LEAKS = ("SELECT", "FROM products", "Traceback")
LEAKS_ANY_CASE = ("sqlite", "asyncpg", "sqlalchemy")
CONNECTIONS = ("products", "categories", "collections")

# Bugs that only PostgreSQL shows (the same inputs pass on SQLite).


def gid(type_name: str, key: object) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def cursor(payload: object) -> str:
    """A cursor in the server's format (URL-safe base64 of JSON, unpadded)."""
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Enum(str):
    """A GraphQL enum value: bare in a literal, a string in variables."""


def literal(value: Any) -> str:
    """`value` written as a GraphQL literal."""
    if value is None:
        return "null"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)  # JSON string escapes are GraphQL string escapes
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


# argument name -> (the variable's GraphQL type, the value)
Args = dict[str, tuple[str, Any]]


def document(field: str, args: Args, selection: str, mode: str) -> tuple[str, dict[str, Any]]:
    """A one-field query passing `args` as literals or as variables."""
    if mode == "literal":
        rendered = ", ".join(f"{name}: {literal(value)}" for name, (_, value) in args.items())
        return f"{{ {field}({rendered}) {selection} }}", {}
    declared = ", ".join(f"${name}: {type_}" for name, (type_, _) in args.items())
    used = ", ".join(f"{name}: ${name}" for name in args)
    variables = {name: value for name, (_, value) in args.items()}
    return f"query({declared}) {{ {field}({used}) {selection} }}", variables


def selection_of(field: str) -> str:
    return "{ nodes { id } }" if field in CONNECTIONS else "{ id }"


def assert_no_leaks(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, text
    for leak in LEAKS_ANY_CASE:
        assert leak not in text.lower(), text


def codes(body: dict[str, Any]) -> list[str | None]:
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors", [])]


async def send(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST a document; the answer must be HTTP 200 JSON, with no internals in it."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_no_leaks(response.text)
    body: dict[str, Any] = response.json()
    assert "INTERNAL_SERVER_ERROR" not in codes(body), body
    return body


async def expect_error(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    code: str,
    field: str | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    body = await send(client, query, variables)
    errors = body.get("errors")
    assert errors, f"expected a {code} error, got {body}"
    assert set(codes(body)) == {code}, errors
    for error in errors:
        assert error["message"].strip() and error["message"] != "Internal server error"
    if field is not None:
        allowed = (field,) if isinstance(field, str) else field
        assert errors[0]["extensions"].get("field") in allowed, errors
    return body


async def expect_ok(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = await send(client, query, variables)
    assert "errors" not in body, body["errors"]
    return body


# --------------------------------------------------------------------------- page sizes

PAGE_SIZES = [
    pytest.param({"first": 101}, "first", id="first=101"),
    pytest.param({"first": -1}, "first", id="first=-1"),
    pytest.param({"last": 101}, "last", id="last=101"),
    pytest.param({"last": -1}, "last", id="last=-1"),
    pytest.param({"first": 5, "last": 5}, ("first", "last"), id="first-and-last"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("connection", CONNECTIONS)
@pytest.mark.parametrize(("sizes", "field"), PAGE_SIZES)
async def test_page_size_out_of_range_is_bad_user_input(
    client: httpx.AsyncClient,
    connection: str,
    mode: str,
    sizes: dict[str, int],
    field: str | tuple[str, ...],
) -> None:
    args = {name: ("Int", value) for name, value in sizes.items()}
    query, variables = document(connection, args, selection_of(connection), mode)
    body = await expect_error(client, query, variables, code="BAD_USER_INPUT", field=field)
    assert body["data"] is None


async def test_page_size_limits_themselves_are_accepted(client: httpx.AsyncClient) -> None:
    body = await expect_ok(
        client, "{ a: products(first: 100) { nodes { id } } b: products(last: 0) { nodes { id } } }"
    )
    assert len(body["data"]["a"]["nodes"]) == 100
    assert body["data"]["b"]["nodes"] == []


# --------------------------------------------------------------------------- cursors

MALFORMED_CURSORS = {
    "random-text": "this is not a cursor!",
    "base64-of-junk-json": cursor({"sort": "NAME", "after": 3}),
    "base64-of-non-json": base64.urlsafe_b64encode(b"\x00junk\xff{").decode(),
    "base64-list-wrong-types": cursor(["CREATED_AT", 12345, "7"]),
    "base64-list-naive-datetime": cursor(["CREATED_AT", "2025-03-01T10:00:00", 7]),
    "base64-list-boolean-id": cursor(["cname", "Shirts", True]),
    "5000-chars": "A" * 5000,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("argument", ["after", "before"])
@pytest.mark.parametrize("connection", CONNECTIONS)
@pytest.mark.parametrize("bad", MALFORMED_CURSORS.values(), ids=MALFORMED_CURSORS.keys())
async def test_malformed_cursor_is_bad_user_input(
    client: httpx.AsyncClient, connection: str, argument: str, mode: str, bad: str
) -> None:
    query, variables = document(
        connection, {argument: ("String", bad)}, selection_of(connection), mode
    )
    await expect_error(client, query, variables, code="BAD_USER_INPUT", field=argument)


FOREIGN_CURSORS = [
    pytest.param(
        "products(first: 3, sortBy: {field: NAME, direction: ASC})",
        "products(first: 3, after: $c, sortBy: {field: PRICE, direction: ASC})",
        id="name-sorted-cursor-on-price-sort-after",
    ),
    pytest.param(
        "products(first: 3, sortBy: {field: NAME, direction: ASC})",
        "products(last: 3, before: $c, sortBy: {field: PRICE, direction: ASC})",
        id="name-sorted-cursor-on-price-sort-before",
    ),
    pytest.param(
        "products(first: 3)",
        "products(first: 3, after: $c, sortBy: {field: NAME, direction: ASC})",
        id="default-sorted-cursor-on-name-sort",
    ),
    pytest.param("categories(first: 3)", "products(first: 3, after: $c)", id="category-cursor"),
    pytest.param("collections(first: 3)", "products(first: 3, after: $c)", id="collection-cursor"),
    pytest.param("products(first: 3)", "categories(first: 3, after: $c)", id="product-cursor"),
]


@pytest.mark.parametrize(("source", "target"), FOREIGN_CURSORS)
async def test_cursor_from_another_list_or_order_is_bad_user_input(
    client: httpx.AsyncClient, source: str, target: str
) -> None:
    page = await expect_ok(client, f"{{ page: {source} {{ pageInfo {{ endCursor }} }} }}")
    issued = page["data"]["page"]["pageInfo"]["endCursor"]
    assert issued
    # The cursor works in the list and order it came from...
    own = source.replace("(", "(after: $c, ", 1)
    await expect_ok(client, f"query($c: String) {{ {own} {{ nodes {{ id }} }} }}", {"c": issued})
    # ...and nowhere else.
    await expect_error(
        client,
        f"query($c: String) {{ {target} {{ nodes {{ id }} }} }}",
        {"c": issued},
        code="BAD_USER_INPUT",
        field="before" if "before:" in target else "after",
    )


HAND_MADE_CURSORS = [
    pytest.param("NAME", ["NAME", "M", 1], id="sane-name"),
    pytest.param("PRICE", ["PRICE", 2**62, 1], id="huge-price"),
    pytest.param(
        "CREATED_AT",
        ["CREATED_AT", "9999-12-31T23:00:00-14:00", 1],
        id="date-past-9999-in-utc",
    ),
    pytest.param(
        "CREATED_AT",
        ["CREATED_AT", "0001-01-01T00:00:00+14:00", 1],
        id="date-before-year-1-in-utc",
    ),
    pytest.param("NAME", ["NAME", "a\u0000b", 1], id="nul-in-name"),
    pytest.param("NAME", ["NAME", "M", 2**31], id="id-beyond-int32"),
]


@pytest.mark.parametrize("argument", ["after", "before"])
@pytest.mark.parametrize(("sort", "payload"), HAND_MADE_CURSORS)
async def test_hand_made_cursor_gives_a_page_or_bad_user_input(
    client: httpx.AsyncClient, sort: str, payload: list[Any], argument: str
) -> None:
    """A well-formed cursor the server never issued: a page or BAD_USER_INPUT, never a crash."""
    body = await send(
        client,
        f"query($c: String) {{ products({argument}: $c, "
        f"sortBy: {{field: {sort}, direction: ASC}}) {{ nodes {{ id }} }} }}",
        {"c": cursor(payload)},
    )
    if "errors" in body:
        assert codes(body) == ["BAD_USER_INPUT"], body
    else:
        assert isinstance(body["data"]["products"]["nodes"], list)


# --------------------------------------------------------------------------- IDs

MALFORMED_IDS = {
    "zzz": "zzz",
    "empty": "",
    "non-numeric-key": gid("Product", "abc"),
    "negative-key": gid("Product", -1),
    "unknown-type": gid("Nope", 1),
    "10000-chars": "A" * 10_000,
}

# target -> (root field, how the ID is passed, the error's `extensions.field`)
ID_TARGETS: dict[str, tuple[str, Callable[[Any], Args], str]] = {
    "node": ("node", lambda v: {"id": ("ID!", v)}, "id"),
    "nodes": ("nodes", lambda v: {"ids": ("[ID!]!", [v])}, "ids"),
    "product": ("product", lambda v: {"id": ("ID", v)}, "id"),
    "variant": ("variant", lambda v: {"id": ("ID", v)}, "id"),
    "category": ("category", lambda v: {"id": ("ID", v)}, "id"),
    "collection": ("collection", lambda v: {"id": ("ID", v)}, "id"),
    "filter.categoryId": (
        "products",
        lambda v: {"filter": ("ProductFilter", {"categoryId": v})},
        "filter.categoryId",
    ),
    "filter.collectionId": (
        "products",
        lambda v: {"filter": ("ProductFilter", {"collectionId": v})},
        "filter.collectionId",
    ),
    "filter.ids": ("products", lambda v: {"filter": ("ProductFilter", {"ids": [v]})}, "filter.ids"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ID_TARGETS)
@pytest.mark.parametrize("bad", MALFORMED_IDS.values(), ids=MALFORMED_IDS.keys())
async def test_malformed_id_is_bad_user_input(
    client: httpx.AsyncClient, target: str, mode: str, bad: str
) -> None:
    field, pass_id, error_field = ID_TARGETS[target]
    query, variables = document(field, pass_id(bad), selection_of(field), mode)
    await expect_error(client, query, variables, code="BAD_USER_INPUT", field=error_field)


async def existing_ids(client: httpx.AsyncClient) -> dict[str, str]:
    """The global ID of one real, visible object of every type."""
    body = await expect_ok(
        client,
        "{ products(first: 1) { nodes { id variants { id } } }"
        " categories(first: 1) { nodes { id } } collections(first: 1) { nodes { id } } }",
    )
    data = body["data"]
    product = data["products"]["nodes"][0]
    return {
        "Product": product["id"],
        "ProductVariant": product["variants"][0]["id"],
        "Category": data["categories"]["nodes"][0]["id"],
        "Collection": data["collections"]["nodes"][0]["id"],
    }


WRONG_TYPES = [
    ("product", "Category"),
    ("variant", "Product"),
    ("category", "Collection"),
    ("collection", "Category"),
    ("filter.categoryId", "Product"),
    ("filter.collectionId", "Category"),
    ("filter.ids", "Category"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("target", "given_type"), WRONG_TYPES)
async def test_id_of_the_wrong_type_is_bad_user_input(
    client: httpx.AsyncClient, target: str, given_type: str, mode: str
) -> None:
    field, pass_id, error_field = ID_TARGETS[target]
    other = (await existing_ids(client))[given_type]
    query, variables = document(field, pass_id(other), selection_of(field), mode)
    await expect_error(client, query, variables, code="BAD_USER_INPUT", field=error_field)


async def test_the_same_ids_resolve_where_their_type_is_expected(
    client: httpx.AsyncClient,
) -> None:
    """Control for the wrong-type test: those IDs are real, and `node` takes any type."""
    real = await existing_ids(client)
    body = await expect_ok(
        client,
        "query($p: ID!, $v: ID!, $c: ID!, $l: ID!) {"
        " product(id: $p) { id } variant(id: $v) { id } category(id: $c) { id }"
        " collection(id: $l) { id } nodes(ids: [$p, $v, $c, $l]) { id } }",
        {"p": real["Product"], "v": real["ProductVariant"], "c": real["Category"],
         "l": real["Collection"]},
    )  # fmt: skip
    data = body["data"]
    typed = [data[f]["id"] for f in ("product", "variant", "category", "collection")]
    assert typed == list(real.values())
    assert [n["id"] for n in data["nodes"]] == list(real.values())


MISSING_KEYS = [
    pytest.param(999_999, id="key-999999"),
    pytest.param(2**31, id="key-2**31"),
    pytest.param(2**63 - 1, id="key-2**63-1"),
]
# target -> (the ID's type, the answer for an object that does not exist)
MISSING_ANSWERS: dict[str, tuple[str, Any]] = {
    "node": ("Product", None),
    "nodes": ("Collection", [None]),
    "product": ("Product", None),
    "variant": ("ProductVariant", None),
    "category": ("Category", None),
    "collection": ("Collection", None),
    "filter.categoryId": ("Category", {"nodes": []}),
    "filter.collectionId": ("Collection", {"nodes": []}),
    "filter.ids": ("Product", {"nodes": []}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", MISSING_ANSWERS)
@pytest.mark.parametrize("key", MISSING_KEYS)
async def test_well_formed_id_of_a_missing_object_is_null_without_error(
    client: httpx.AsyncClient, target: str, key: int, mode: str
) -> None:
    type_name, expected = MISSING_ANSWERS[target]
    field, pass_id, _ = ID_TARGETS[target]
    query, variables = document(field, pass_id(gid(type_name, key)), selection_of(field), mode)
    body = await expect_ok(client, query, variables)
    assert body["data"] == {field: expected}


# --------------------------------------------------------------------------- lookups


LOOKUPS = [
    ("product", "Product", "slug"),
    ("variant", "ProductVariant", "sku"),
    ("category", "Category", "slug"),
    ("collection", "Collection", "slug"),
]


@pytest.mark.parametrize("given", ["neither", "both"])
@pytest.mark.parametrize(("field", "type_name", "key"), LOOKUPS)
async def test_lookup_needs_exactly_one_of_id_and_key(
    client: httpx.AsyncClient, field: str, type_name: str, key: str, given: str
) -> None:
    args = "" if given == "neither" else f'(id: "{gid(type_name, 1)}", {key}: "x")'
    body = await expect_error(
        client, f"{{ {field}{args} {{ id }} }}", code="BAD_USER_INPUT", field=("id", key)
    )
    assert body["data"] == {field: None}


@pytest.mark.parametrize(("field", "type_name", "key"), LOOKUPS)
async def test_overlong_slug_or_sku_is_bad_user_input(
    client: httpx.AsyncClient, field: str, type_name: str, key: str
) -> None:
    await expect_error(
        client,
        f"query($k: String) {{ {field}({key}: $k) {{ id }} }}",
        {"k": "s" * 10_000},
        code="BAD_USER_INPUT",
        field=key,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("field", "type_name", "key"), [pytest.param(*lookup) for lookup in LOOKUPS]
)
async def test_nul_character_in_slug_or_sku_finds_nothing(
    client: httpx.AsyncClient, field: str, type_name: str, key: str, mode: str
) -> None:
    query, variables = document(field, {key: ("String", "shirt\u0000")}, "{ id }", mode)
    body = await send(client, query, variables)
    assert set(codes(body)) <= {"BAD_USER_INPUT"}, body
    assert body["data"] == {field: None}


@pytest.mark.parametrize("field", ["nodes", "filter.ids"])
async def test_more_than_100_ids_is_bad_user_input(client: httpx.AsyncClient, field: str) -> None:
    many = [gid("Product", n) for n in range(1, 102)]
    if field == "nodes":
        query = "query($i: [ID!]!) { nodes(ids: $i) { id } }"
    else:
        query = "query($i: [ID!]) { products(filter: {ids: $i}) { nodes { id } } }"
    await expect_error(client, query, {"i": many}, code="BAD_USER_INPUT", field=("ids", field))


# --------------------------------------------------------------------------- sorting

UNKNOWN_SORTS = [
    pytest.param({"field": Enum("POPULARITY"), "direction": Enum("ASC")}, id="unknown-field"),
    pytest.param({"field": Enum("NAME"), "direction": Enum("UP")}, id="unknown-direction"),
    pytest.param({"field": Enum("NAME")}, id="missing-direction"),
]


@pytest.mark.parametrize(
    ("mode", "code"), [("literal", "GRAPHQL_VALIDATION_FAILED"), ("variables", "BAD_USER_INPUT")]
)
@pytest.mark.parametrize("sort", UNKNOWN_SORTS)
async def test_unknown_sort_is_rejected(
    client: httpx.AsyncClient, sort: dict[str, Any], mode: str, code: str
) -> None:
    args = {"sortBy": ("ProductSortBy", sort)}
    query, variables = document("products", args, "{ nodes { id } }", mode)
    body = await expect_error(client, query, variables, code=code)
    assert body["data"] is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("parent", ["products", "category", "collection"])
async def test_relevance_sort_without_search_is_bad_user_input(
    client: httpx.AsyncClient, parent: str, mode: str
) -> None:
    sort = {"field": Enum("RELEVANCE"), "direction": Enum("DESC")}
    header, variables = ("", {}) if mode == "literal" else ("query($s: ProductSortBy)", {"s": sort})
    field = f"products(sortBy: {literal(sort) if mode == 'literal' else '$s'}) {{ nodes {{ id }} }}"
    if parent != "products":  # the same field under a category or a collection (no `search`)
        lists = "categories" if parent == "category" else "collections"
        page = await expect_ok(client, f"{{ {lists}(first: 1) {{ nodes {{ slug }} }} }}")
        slug = page["data"][lists]["nodes"][0]["slug"]
        field = f"{parent}(slug: {json.dumps(slug)}) {{ {field} }}"
    await expect_error(
        client, f"{header} {{ {field} }}", variables, code="BAD_USER_INPUT", field="sortBy"
    )


# --------------------------------------------------------------------------- search

OVERLONG_SEARCHES = {
    "10000-letters": "a" * 10_000,
    "10000-chars-of-words": ("shirt " * 2000)[:10_000],
    "257-chars": "b" * 257,
    "10000-operators": '"*' * 5000,
    "10000-spaces": " " * 10_000,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "text",
    [pytest.param(text, id=name) for name, text in OVERLONG_SEARCHES.items()],
)
async def test_overlong_search_is_bad_user_input(
    client: httpx.AsyncClient, text: str, mode: str
) -> None:
    query, variables = document("products", {"search": ("String", text)}, "{ nodes { id } }", mode)
    body = await expect_error(client, query, variables, code="BAD_USER_INPUT", field="search")
    assert body["data"] is None


async def test_search_of_256_characters_is_accepted(client: httpx.AsyncClient) -> None:
    body = await expect_ok(
        client, "query($q: String) { products(search: $q) { totalCount } }", {"q": "shirt " * 42}
    )
    assert body["data"]["products"]["totalCount"] >= 0


SQL_INJECTIONS = [
    "'; DROP TABLE products; --",
    '"; DROP TABLE products; --',
    "shirt' OR '1'='1",
    "1; DELETE FROM products",
    "shirt') UNION SELECT sql FROM sqlite_master --",
    "x' || pg_sleep(5) || '",
]
SEARCH_SYNTAX = [
    '"',
    "*",
    "NEAR(",
    ")",
    "AND OR NOT",
    ":*",
    "&|!",
    "'",
    "\\",
    "%",
    "_",
    "%_%",
    "shirt AND NOT jacket",
    "NEAR(shirt jacket, 2)",
    "shirt:* & !jacket | wool <-> cotton",
    "name:shirt",
    "-shirt ^wool +cotton",
    "{shirt}",
    "Straße über café naïve",
    "日本語のシャツ",
    "🛒🔥👕",
    "\t\n",
    *SQL_INJECTIONS,
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text", SEARCH_SYNTAX)
async def test_search_syntax_is_plain_text(client: httpx.AsyncClient, text: str, mode: str) -> None:
    query, variables = document(
        "products", {"search": ("String", text)}, "{ totalCount nodes { id name } }", mode
    )
    body = await expect_ok(client, query, variables)
    page = body["data"]["products"]
    assert len(page["nodes"]) == min(page["totalCount"], 20)


DECORATED_SHIRTS = [
    'shirt"*', '"shirt"', "shirt*", "(shirt)", "shirt:*", "SHIRT!", "'shirt'", "shirt\\",
    "%shirt%", "+shirt", "shirt;", "&shirt|", "  shirt  ", "shirt --",
]  # fmt: skip


@pytest.mark.parametrize("decorated", DECORATED_SHIRTS)
async def test_search_operators_are_ignored_around_words(
    client: httpx.AsyncClient, decorated: str
) -> None:
    query = "query($q: String) { products(search: $q, first: 100) { totalCount nodes { id } } }"
    plain = (await expect_ok(client, query, {"q": "shirt"}))["data"]["products"]
    assert plain["totalCount"] > 0
    found = (await expect_ok(client, query, {"q": decorated}))["data"]["products"]
    assert found == plain


async def test_sql_injection_through_search_leaves_the_catalog_intact(fresh_db: Database) -> None:
    async with make_client(fresh_db) as client:
        count = "{ products(first: 1) { totalCount } }"
        before = (await expect_ok(client, count))["data"]["products"]["totalCount"]
        for text in SQL_INJECTIONS:
            for mode in MODES:
                query, variables = document(
                    "products", {"search": ("String", text)}, "{ nodes { id } }", mode
                )
                await expect_ok(client, query, variables)
        after = (await expect_ok(client, count))["data"]["products"]["totalCount"]
    assert after == before > 0
    async with fresh_db.read() as conn:
        rows = (await conn.execute(sa.text("SELECT count(*) FROM products"))).scalar_one()
    assert rows == CATALOG_PRODUCTS


# --------------------------------------------------------------------------- decimals

BAD_DECIMALS = {
    "abc": "abc",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "0.0000001": "0.0000001",
    "empty": "",
    "true": True,
    "list": ["1.00"],
    "object": {"amount": "1.00"},
}


@pytest.mark.parametrize(
    ("mode", "code"), [("literal", "GRAPHQL_VALIDATION_FAILED"), ("variables", "BAD_USER_INPUT")]
)
@pytest.mark.parametrize("bound", ["priceGte", "priceLte"])
@pytest.mark.parametrize("bad", BAD_DECIMALS.values(), ids=BAD_DECIMALS.keys())
async def test_malformed_decimal_is_rejected(
    client: httpx.AsyncClient, bad: Any, bound: str, mode: str, code: str
) -> None:
    if mode == "variables":
        query = f"query($p: Decimal) {{ products(filter: {{{bound}: $p}}) {{ nodes {{ id }} }} }}"
        variables = {"p": bad}
    else:
        query, variables = document(
            "products", {"filter": ("ProductFilter", {bound: bad})}, "{ nodes { id } }", mode
        )
    body = await expect_error(client, query, variables, code=code)
    assert body["data"] is None


@pytest.mark.parametrize("mode", MODES)
async def test_price_lower_bound_above_upper_bound_is_bad_user_input(
    client: httpx.AsyncClient, mode: str
) -> None:
    bounds = {"priceGte": "50.00", "priceLte": "10.00"}
    query, variables = document(
        "products", {"filter": ("ProductFilter", bounds)}, "{ nodes { id } }", mode
    )
    await expect_error(
        client,
        query,
        variables,
        code="BAD_USER_INPUT",
        field=("filter.priceGte", "filter.priceLte"),
    )


@pytest.mark.parametrize("bounds", [("10.00", "10.00"), ("0", "99999"), (5, 250.5)])
async def test_sane_price_bounds_are_accepted(
    client: httpx.AsyncClient, bounds: tuple[Any, Any]
) -> None:
    """Control: strings, ints and floats that are valid decimals pass."""
    body = await expect_ok(
        client,
        "query($lo: Decimal, $hi: Decimal) {"
        " products(filter: {priceGte: $lo, priceLte: $hi}) { totalCount } }",
        {"lo": bounds[0], "hi": bounds[1]},
    )
    assert body["data"]["products"]["totalCount"] >= 0


# --------------------------------------------------------------------------- wrong types

WRONG_TYPE_ARGS = [
    pytest.param("products", {"first": ("Int", "ten")}, id="first-string"),
    pytest.param("products", {"first": ("Int", 2.5)}, id="first-float"),
    pytest.param("products", {"first": ("Int", 2**31)}, id="first-beyond-int32"),
    pytest.param("categories", {"level": ("Int", "x")}, id="level-string"),
    pytest.param(
        "products", {"filter": ("ProductFilter", {"inStock": "yes"})}, id="inStock-string"
    ),
    pytest.param("products", {"filter": ("ProductFilter", {"colour": "red"})}, id="unknown-key"),
    pytest.param("products", {"filter": ("ProductFilter", "cheap")}, id="filter-string"),
    pytest.param("products", {"search": ("String", 5)}, id="search-int"),
    pytest.param("node", {"id": ("ID!", True)}, id="id-boolean"),
    pytest.param("node", {"id": ("ID!", None)}, id="id-null"),
    pytest.param("nodes", {"ids": ("[ID!]!", [None])}, id="ids-with-null"),
]


@pytest.mark.parametrize(
    ("mode", "code"), [("literal", "GRAPHQL_VALIDATION_FAILED"), ("variables", "BAD_USER_INPUT")]
)
@pytest.mark.parametrize(("field", "args"), WRONG_TYPE_ARGS)
async def test_wrong_argument_type_is_rejected(
    client: httpx.AsyncClient, field: str, args: Args, mode: str, code: str
) -> None:
    query, variables = document(field, args, selection_of(field), mode)
    body = await expect_error(client, query, variables, code=code)
    assert body["data"] is None


async def test_missing_required_variable_is_bad_user_input(client: httpx.AsyncClient) -> None:
    await expect_error(
        client, "query($id: ID!) { node(id: $id) { id } }", {}, code="BAD_USER_INPUT"
    )


# --------------------------------------------------------------------------- documents

BROKEN_DOCUMENTS = [
    "{ products { nodes { id }",
    "{ products(first: ) { nodes { id } } }",
    "{ products(first: 1 { nodes { id } } }",
    '{ product(slug: "unterminated) { id } }',
    "query {",
    "}",
    "{ products { nodes { id } } } }",
    "SELECT * FROM products",
    "\u00a0{ __typename }\u0000",
]


@pytest.mark.parametrize("query", BROKEN_DOCUMENTS)
async def test_broken_document_is_a_parse_error(client: httpx.AsyncClient, query: str) -> None:
    # `send` would flag the echoed "SELECT"; check this one by hand.
    response = await client.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert codes(body) == ["GRAPHQL_PARSE_FAILED"], body
    assert body.get("data") is None
    assert body["errors"][0]["message"].startswith("Syntax Error")


INVALID_DOCUMENTS = [
    "{ nope }",
    "{ products { nodes { price } } }",
    "{ products(colour: RED) { nodes { id } } }",
    "{ products }",
    "{ products { nodes { id { value } } } }",
    "{ product(slug: 5) { id } }",
    "query A { __typename } query A { __typename }",
    "{ ...Missing }",
    "fragment F on Nope { id } { ...F }",
    "subscription { __typename }",
    "query($n: Int, $n: Int) { products(first: $n) { nodes { id } } }",
]


@pytest.mark.parametrize("query", INVALID_DOCUMENTS)
async def test_invalid_document_is_a_validation_error(
    client: httpx.AsyncClient, query: str
) -> None:
    body = await expect_error(client, query, code="GRAPHQL_VALIDATION_FAILED")
    assert body.get("data") is None


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($s: String) { product(id: $s) { id } }", {"s": "x"}),
        ("query($n: Int) { products { nodes { id } } }", {"n": 1}),
        ("{ products(first: $n) { nodes { id } } }", {"n": 1}),
        ("query($p: Product) { products { nodes { id } } }", {}),
    ],
)
async def test_badly_declared_variable_is_a_validation_error(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any]
) -> None:
    body = await expect_error(client, query, variables, code="GRAPHQL_VALIDATION_FAILED")
    assert body.get("data") is None


# --------------------------------------------------------------------------- encoding


@pytest.fixture
async def lenient_client(catalog_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """Like `client`, but a crash comes back as the 500 a real server would send."""
    app = create_app(Settings(database_url=catalog_db.url, debug=True), db=catalog_db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        yield client


LONE_SURROGATE = "shirt\ud800"
SURROGATE_CASES = [
    pytest.param("product(slug: $v) { id }", "String", LONE_SURROGATE, id="slug"),
    pytest.param("variant(sku: $v) { id }", "String", LONE_SURROGATE, id="sku"),
    pytest.param("products(sortBy: $v) { nodes { id } }", "ProductSortBy",
                 {"field": LONE_SURROGATE, "direction": "ASC"}, id="enum"),
    pytest.param("products(search: $v) { nodes { id } }", "String", LONE_SURROGATE, id="search"),
    pytest.param("products(after: $v) { nodes { id } }", "String", LONE_SURROGATE, id="cursor"),
    pytest.param("node(id: $v) { id }", "ID!", LONE_SURROGATE, id="id"),
    pytest.param("products(first: $v) { nodes { id } }", "Int", LONE_SURROGATE, id="int"),
    pytest.param("products(filter: {priceGte: $v}) { nodes { id } }", "Decimal", LONE_SURROGATE,
                 id="decimal"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "type_", "value"), SURROGATE_CASES)
async def test_lone_surrogate_in_variables_is_refused_cleanly(
    lenient_client: httpx.AsyncClient, field: str, type_: str, value: Any
) -> None:
    """Not valid Unicode: a 400, or a 200 with `null`/BAD_USER_INPUT; never a 500."""
    payload = {"query": f"query($v: {type_}) {{ {field} }}", "variables": {"v": value}}
    response = await lenient_client.post(
        "/graphql",
        content=json.dumps(payload).encode(),  # ASCII escapes: the body itself is valid JSON
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (200, 400), response.text
    assert_no_leaks(response.text)
    if response.status_code == 200:
        body = response.json()
        assert set(codes(body)) <= {"BAD_USER_INPUT"}, body
