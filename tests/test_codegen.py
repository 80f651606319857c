"""Schema-driven clients: the storefront and admin operations in tests/clients/ compile with
graphql-codegen (typescript + typescript-operations) and relay-compiler against the committed
schema.graphql, validate against the live schema and fit the default abuse limits.

Node and npm are needed for the compilers (`npm ci` once, cached in tests/clients/node_modules);
without node the compiler tests are skipped, except in CI (CI=true) where they fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from graphql import (
    OperationDefinitionNode,
    build_ast_schema,
    find_breaking_changes,
    find_dangerous_changes,
    parse,
    validate,
)
from node_clients import install_node_clients, run_node_tool

from models.settings import QueryLimits
from schema import build_schema, export_sdl
from schema.limits import operation_cost, validation_rules

CLIENTS = Path(__file__).parent / "clients"
ROOT = CLIENTS.parent.parent


def _documents() -> str:
    files = sorted((CLIENTS / "storefront").glob("*.graphql"))
    files += sorted((CLIENTS / "admin").glob("*.graphql"))
    return "\n".join(f.read_text() for f in files)


def test_client_operations_are_valid_and_fit_the_default_limits() -> None:
    schema = build_schema()._schema
    document = parse(_documents(), max_tokens=QueryLimits().max_tokens * 4)
    assert validate(schema, document, validation_rules(QueryLimits())) == []
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    assert len(operations) >= 15
    for operation in operations:
        assert operation.name is not None
        for first in (None, 100):  # default page sizes, then the largest page
            variables = {"first": first} if first else {}
            cost = operation_cost(schema, document, operation, variables)
            assert cost <= QueryLimits().max_cost, (operation.name.value, first, cost)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return install_node_clients()


def test_graphql_codegen_generates_typescript(node_modules: Path, tmp_path: Path) -> None:
    codegen = node_modules / ".bin" / "graphql-codegen"
    run_node_tool([str(codegen), "--config", "codegen.ts"], CLIENTS, 180, CODEGEN_OUT=str(tmp_path))
    generated = (tmp_path / "graphql.ts").read_text()
    for name in ("ProductListingQuery", "CartCreateMutation", "AdminOrdersQuery"):
        assert f"export type {name} = " in generated, name
    assert "export type ProductCardFragment = " in generated
    assert "export type OrderFilter = " in generated  # input types from the schema


def test_relay_compiler_compiles_the_relay_documents(node_modules: Path, tmp_path: Path) -> None:
    """Relay's rules hold: @refetchable fragments through `node(id:)` and on Query,
    `@connection` on products. The committed config runs on a copy, paths made absolute."""
    config = json.loads((CLIENTS / "relay" / "relay.config.json").read_text())
    config["schema"] = str((CLIENTS / "relay" / config["schema"]).resolve())
    (tmp_path / "relay.config.json").write_text(json.dumps(config))
    for source in (CLIENTS / "relay").glob("*.ts"):
        shutil.copy(source, tmp_path)
    artifacts = tmp_path / config["artifactDirectory"]
    artifacts.mkdir()
    run_node_tool([str(node_modules / ".bin" / "relay-compiler")], tmp_path, 180)
    generated = {p.name for p in artifacts.iterdir()}
    assert {
        "CategoryProductsPaginationQuery.graphql.ts",  # refetch through node(id:)
        "CatalogPaginationQuery.graphql.ts",  # refetch on Query
        "ProductTileRefetchQuery.graphql.ts",
        "CategoryRouteQuery.graphql.ts",
    } <= generated
    pagination = (artifacts / "CategoryProductsPaginationQuery.graphql.ts").read_text()
    assert "node(id: $id)" in pagination
    assert (
        "__CategoryProducts_products_connection"
        in (artifacts / "CategoryProducts_category.graphql.ts").read_text()
    )
    assert (ROOT / "schema.graphql").exists()


# Breaking changes against the last release (tests/clients/schema.release.graphql)

RELEASE = CLIENTS / "schema.release.graphql"
ALLOWLIST = CLIENTS / "breaking-changes.allow"


def _announced() -> set[str]:
    lines = (line.strip() for line in ALLOWLIST.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def _unannounced(old_sdl: str, new_sdl: str) -> list[str]:
    old, new = build_ast_schema(parse(old_sdl)), build_ast_schema(parse(new_sdl))
    for change in find_dangerous_changes(old, new):
        print(f"dangerous (not failing): {change.type.name}: {change.description}")
    changes = [f"{c.type.name}: {c.description}" for c in find_breaking_changes(old, new)]
    return [change for change in changes if change not in _announced()]


def test_no_unannounced_breaking_changes_since_the_release() -> None:
    unannounced = _unannounced(RELEASE.read_text(), export_sdl())
    assert not unannounced, (
        "breaking schema changes since the last release; announce each one by adding "
        f"its line to {ALLOWLIST.relative_to(ROOT)} (or keep the old field, deprecated):\n"
        + "\n".join(unannounced)
    )


def test_the_breaking_change_check_catches_a_removed_field() -> None:
    old = RELEASE.read_text()
    new = old.replace("  nodes(ids: [ID!]!): [Node]!\n", "", 1)
    assert new != old
    assert _unannounced(old, new) == ["FIELD_REMOVED: Field Query.nodes was removed."]
