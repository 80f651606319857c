"""Abuse limits (schema.limits) through HTTP: each limit passes at the limit and refuses one
more with its code, before anything runs; fragments cannot hide depth or aliases."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from conftest import GraphQL, graphql_caller, make_client
from graphql import get_introspection_query
from graphql.language import Lexer, Source, TokenKind

from models.db import Database
from models.settings import QueryLimits, Settings, SettingsError


def _codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def _refused(body: dict[str, Any], code: str) -> dict[str, Any]:
    """The one error of a refused operation (nothing ran: no data)."""
    assert body["data"] is None, body
    assert _codes(body) == [code], body
    extensions: dict[str, Any] = body["errors"][0]["extensions"]
    return extensions


def _tokens(query: str) -> int:
    lexer, count = Lexer(Source(query)), 0
    while lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


def _parents(levels: int) -> str:
    """`{ products(first: 1) { nodes { category { parent { ... name } } } } }`: 3 fields,
    then `levels` parents, then `name`: depth 4 + levels."""
    inner = "name"
    for _ in range(levels):
        inner = f"parent {{ {inner} }}"
    return f"{{ products(first: 1) {{ nodes {{ category {{ {inner} }} }} }} }}"


# depth (default 10)


async def test_depth_at_the_limit_passes_and_one_more_is_refused(gql: GraphQL) -> None:
    body = await gql(_parents(6))  # depth 10
    assert body["data"]["products"]["nodes"]
    extensions = _refused(await gql(_parents(7), errors=True), "QUERY_TOO_DEEP")
    assert extensions["depth"] == {"requested": 11, "limit": 10}


async def test_named_and_inline_fragments_count_towards_depth(gql: GraphQL) -> None:
    named = """
      fragment Up on Category { parent { parent { parent { parent { ...Top } } } } }
      fragment Top on Category { parent { parent { ... on Category { parent { name } } } } }
      { products(first: 1) { nodes { ... on Product { category { ...Up } } } } }
    """  # products nodes category + 4 + 3 parents + name = 11
    extensions = _refused(await gql(named, errors=True), "QUERY_TOO_DEEP")
    assert extensions["depth"]["requested"] == 11
    within = named.replace("parent { name }", "name")  # 10
    assert (await gql(within))["data"]["products"]["nodes"]


async def test_nested_introspection_lists_are_refused(gql: GraphQL) -> None:
    query = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    _refused(await gql(query, errors=True), "QUERY_TOO_DEEP")


async def test_graphiql_introspection_query_passes_the_defaults(gql: GraphQL) -> None:
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
        one_of=True,
    )
    body = await gql(query)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


# aliases (default 15)


def _aliased(count: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"


async def test_aliases_at_the_limit_pass_and_one_more_is_refused(gql: GraphQL) -> None:
    body = await gql(_aliased(15))
    assert len(body["data"]) == 15
    extensions = _refused(await gql(_aliased(16), errors=True), "TOO_MANY_ALIASES")
    assert extensions["aliases"] == {"requested": 16, "limit": 15}


async def test_a_fragment_counts_its_aliases_every_time_it_is_spread(gql: GraphQL) -> None:
    fields = " ".join(f"n{i}: name" for i in range(8))
    query = f"""
      fragment Names on Product {{ {fields} }}
      {{
        products(first: 1) {{ nodes {{ ...Names }} }}
        categories(first: 1) {{ nodes {{ products(first: 1) {{ nodes {{ ...Names }} }} }} }}
      }}
    """
    extensions = _refused(await gql(query, errors=True), "TOO_MANY_ALIASES")
    assert extensions["aliases"]["requested"] == 16
    xs = " ".join(f"x{i}: name" for i in range(8))
    ys = " ".join(f"y{i}: slug" for i in range(8))
    inline = f"{{ products(first: 1) {{ nodes {{ ... on Product {{ {xs} }} ... {{ {ys} }} }} }} }}"
    _refused(await gql(inline, errors=True), "TOO_MANY_ALIASES")


# tokens (default 2,000)


def _sized(tokens: int) -> str:
    """A valid document of exactly `tokens` tokens: operations `query Qi { __typename }`
    (5 tokens each), the first with as many more `__typename` as it takes."""
    count, extra = divmod(tokens, 5)
    first = "query Q0 { __typename" + " __typename" * extra + " }"
    query = " ".join([first, *(f"query Q{i} {{ __typename }}" for i in range(1, count))])
    assert _tokens(query) == tokens
    return query


async def test_tokens_at_the_limit_pass_and_one_more_is_refused(
    client: httpx.AsyncClient,
) -> None:
    async def post(query: str) -> dict[str, Any]:
        response = await client.post("/graphql", json={"query": query, "operationName": "Q1"})
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    assert await post(_sized(2000)) == {"data": {"__typename": "Query"}, "extensions": ANY}
    extensions = _refused(await post(_sized(2001)), "TOO_MANY_TOKENS")
    assert extensions["tokens"] == {"limit": 2000}


# cost (default 1,000)

NESTED = """
query Nested($c: Int, $n: Int) {
  categories(first: $c) { nodes { products(first: $n) { nodes { name } } } }
}"""  # c * (category 1 + n * product 1)


async def test_cost_at_the_limit_passes_and_one_more_is_refused(gql: GraphQL) -> None:
    body = await gql(NESTED, {"c": 20, "n": 49})  # 20 * 50 = 1000
    assert body["data"]["categories"]["nodes"]
    body = await gql(NESTED, {"c": 11, "n": 90}, errors=True)  # 11 * 91 = 1001
    extensions = _refused(body, "QUERY_TOO_COMPLEX")
    assert extensions["cost"] == {"requested": 1001, "limit": 1000}


async def test_nested_connections_multiply(gql: GraphQL) -> None:
    query = "{ categories(first: 20) { nodes { products(first: 50) { nodes { name } } } } }"
    extensions = _refused(await gql(query, errors=True), "QUERY_TOO_COMPLEX")
    assert extensions["cost"] == {"requested": 1020, "limit": 1000}  # 20 * (1 + 50)


async def test_cost_reads_variable_defaults_and_the_default_page_size(gql: GraphQL) -> None:
    with_default = NESTED.replace("$n: Int", "$n: Int = 90")
    body = await gql(with_default, {"c": 11}, errors=True)
    assert _refused(body, "QUERY_TOO_COMPLEX")["cost"]["requested"] == 1001
    # without first/last a connection counts the default page size, 20; an edge and its
    # node are one object, pageInfo counts once
    query = """query($c: Int) { categories(first: $c) { nodes { products {
      edges { node { name category { name } } } pageInfo { hasNextPage } } } } }"""
    body = await gql(query)  # 20 * (1 + 20 * 2 + 1) = 840
    assert body["data"]["categories"]["nodes"]
    body = await gql(query, {"c": 24}, errors=True)
    assert _refused(body, "QUERY_TOO_COMPLEX")["cost"]["requested"] == 24 * 42


async def test_fragments_count_towards_cost(gql: GraphQL) -> None:
    query = """
      fragment Products on Category { products(first: 48) { ...Page } }
      fragment Page on ProductConnection { ... on ProductConnection { nodes { ...Name } } }
      fragment Name on Product { name category { name } }
      { categories(first: 10) { nodes { ...Products ... on Category { children { nodes { id } } } } } }
    """  # 10 * (1 + 48 * 2 + 20 * 1) = 1170
    body = await gql(query, errors=True)
    assert _refused(body, "QUERY_TOO_COMPLEX")["cost"]["requested"] == 1170


async def test_mutations_cost_ten_each(fresh_db: Database) -> None:
    revoke = 'r{i}: tokenRevoke(refreshToken: "nope") {{ errors {{ code }} }}'  # 10 + 1
    async with make_client(fresh_db, query_limits=QueryLimits(max_cost=22)) as client:
        gql = graphql_caller(client)
        two = "mutation { " + " ".join(revoke.format(i=i) for i in range(2)) + " }"
        body = await gql(two)
        assert set(body["data"]) == {"r0", "r1"}
        three = "mutation { " + " ".join(revoke.format(i=i) for i in range(3)) + " }"
        extensions = _refused(await gql(three, errors=True), "QUERY_TOO_COMPLEX")
        assert extensions["cost"] == {"requested": 33, "limit": 22}


# fragments that never end


async def test_circular_fragments_are_refused(gql: GraphQL) -> None:
    for query in (
        "fragment A on Query { ...A } { ...A }",
        "fragment A on Query { ...B } fragment B on Query { __typename ...A } { ...A }",
        "fragment A on Product { category { products { nodes { ...A } } } }"
        " { products { nodes { ...A } } }",
    ):
        body = await gql(query, errors=True)
        assert body["data"] is None
        assert "GRAPHQL_VALIDATION_FAILED" in _codes(body), body
        assert "INTERNAL_SERVER_ERROR" not in _codes(body)


async def test_a_long_fragment_chain_is_answered_without_recursion_errors(
    gql: GraphQL,
) -> None:
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(220))
    query = f"{chain} fragment F220 on Query {{ __typename }} {{ ...F0 }}"
    body = await gql(query, errors=True)
    assert "INTERNAL_SERVER_ERROR" not in _codes(body), body


# configuration


async def test_limits_come_from_settings(catalog_db: Database) -> None:
    limits = QueryLimits(max_depth=3, max_aliases=1, max_tokens=30, max_cost=5)
    async with make_client(catalog_db, query_limits=limits) as client:
        gql = graphql_caller(client)
        assert (await gql("{ products(first: 5) { nodes { name } } }"))["data"]  # 5
        body = await gql("{ products(first: 1) { nodes { category { name } } } }", errors=True)
        assert _codes(body) == ["QUERY_TOO_DEEP"]
        body = await gql("{ products(first: 6) { nodes { name } } }", errors=True)
        assert _codes(body) == ["QUERY_TOO_COMPLEX"]
        body = await gql("{ a: __typename b: __typename }", errors=True)
        assert _codes(body) == ["TOO_MANY_ALIASES"]
        assert await gql("{" + " __typename" * 28 + " }")  # 30 tokens
        body = await gql("{" + " __typename" * 29 + " }", errors=True)
        assert _codes(body) == ["TOO_MANY_TOKENS"]


def test_settings_read_the_limits_from_the_environment() -> None:
    env = {
        "SHOPQL_DEBUG": "1",
        "SHOPQL_MAX_DEPTH": "12",
        "SHOPQL_MAX_ALIASES": "30",
        "SHOPQL_MAX_TOKENS": "5000",
        "SHOPQL_MAX_COST": "2500",
    }
    assert Settings.from_env(env).query_limits == QueryLimits(12, 30, 5000, 2500)
    assert Settings.from_env({"SHOPQL_DEBUG": "1"}).query_limits == QueryLimits(10, 15, 2000, 1000)


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1.5"])
@pytest.mark.parametrize(
    "name", ["SHOPQL_MAX_DEPTH", "SHOPQL_MAX_ALIASES", "SHOPQL_MAX_TOKENS", "SHOPQL_MAX_COST"]
)
def test_limits_must_be_positive_whole_numbers(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"SHOPQL_DEBUG": "1", name: value})


def test_remembered_costs_follow_the_variables_they_depend_on() -> None:
    """The cost of a cached document's operation is remembered per value of the
    variables it reads (page sizes), typed: it always equals a fresh computation."""
    from graphql import OperationDefinitionNode, parse

    from schema import build_schema
    from schema.limits import cached_operation_cost, operation_cost

    schema = build_schema()._schema
    document = parse(
        """query Q($n: Int = 7, $m: Int, $name: String) {
          products(first: $n) { nodes { name category { products(first: $m) { nodes { name } } } } }
          product(slug: $name) { name }
        }"""
    )
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    cases: list[dict[str, Any] | None] = [
        None, {}, {"n": 3}, {"n": 3, "m": 50}, {"n": 50, "m": 3}, {"n": True}, {"n": 1},
        {"n": 1.0}, {"n": "3"}, {"n": [3]}, {"n": {"x": 1}}, {"n": 3, "name": "other"},
        {"n": -5, "m": 10**9}, {"n": None},
    ]  # fmt: skip
    for _ in range(2):  # computed, then remembered
        for variables in cases:
            expected = operation_cost(schema, document, operation, variables)
            assert cached_operation_cost(schema, document, operation, variables) == expected
    assert len({operation_cost(schema, document, operation, v) for v in cases}) >= 5
