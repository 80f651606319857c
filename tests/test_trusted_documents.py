"""Trusted documents (SHOPQL_TRUSTED_DOCUMENTS): only the manifest's documents run,
named by documentId (graphql-codegen's client preset), doc_id / id (Relay) or the APQ hash;
manifests as relay-compiler and the client preset write them; bad manifests refused at
start-up."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import TEST_SECRET, make_client
from node_clients import CLIENTS, install_node_clients, run_node_tool
from test_persisted_queries import serving
from websockets.typing import Subprotocol

from app import create_app
from models.db import Database
from models.settings import Settings, SettingsError

ROOT = Path(__file__).parent.parent
LISTING = "query Listing($n: Int) { products(first: $n) { nodes { name } } }"
SHOP = "query Shop { shippingMethods { name } }"
UNTRUSTED = "query Untrusted { products(first: 1) { nodes { slug } } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json().get("errors", ())]


def ran(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, response.text
    data: dict[str, Any] = body["data"]
    return data


def write(tmp_path: Path, manifest: object, name: str = "manifest.json") -> str:
    path = tmp_path / name
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return str(path)


@pytest.fixture(scope="module")
def relay_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The persisted queries relay-compiler writes for tests/clients/relay (a copy of its
    config, with local persisting)."""
    node_modules = install_node_clients()
    work = tmp_path_factory.mktemp("relay")
    config = json.loads((CLIENTS / "relay" / "relay.config.json").read_text())
    config["schema"] = str((CLIENTS / "relay" / config["schema"]).resolve())
    config["persistConfig"] = {"file": "./persisted_queries.json", "algorithm": "MD5"}
    (work / "relay.config.json").write_text(json.dumps(config))
    (work / "persisted_queries.json").write_text("{}")
    for source in (CLIENTS / "relay").glob("*.ts"):
        shutil.copy(source, work)
    (work / config["artifactDirectory"]).mkdir()
    run_node_tool([str(node_modules / ".bin" / "relay-compiler")], work, 180)
    manifest: dict[str, str] = json.loads((work / "persisted_queries.json").read_text())
    return manifest


def relay_id(manifest: dict[str, str], operation: str) -> str:
    [found] = [i for i, text in manifest.items() if text.startswith(f"query {operation}(")]
    return found


async def test_relay_persisted_queries_run_by_doc_id_and_nothing_else_runs(
    catalog_db: Database, relay_manifest: dict[str, str], tmp_path: Path
) -> None:
    path = write(tmp_path, relay_manifest)
    catalog = relay_id(relay_manifest, "CatalogQuery")
    async with make_client(catalog_db, trusted_documents=path) as client:
        by_doc_id = ran(await client.post("/graphql", json={"doc_id": catalog, "variables": {}}))
        assert by_doc_id["products"]["edges"], by_doc_id
        by_id = ran(await client.post("/graphql", json={"id": catalog}))
        assert by_id == by_doc_id
        over_get = await client.get(
            "/graphql", params={"doc_id": catalog, "variables": "{}"}, headers={"accept": "*/*"}
        )
        assert ran(over_get) == by_doc_id
        # The manifest's own text runs too; any other text does not.
        assert ran(await client.post("/graphql", json={"query": relay_manifest[catalog]}))
        refused = await client.post("/graphql", json={"query": UNTRUSTED})
        assert codes(refused) == ["PERSISTED_QUERY_NOT_FOUND"]
        assert "Only trusted documents" in refused.json()["errors"][0]["message"]
        assert refused.json().get("data") is None
        # An ID not in the manifest: Apollo's not-found answer.
        unknown = await client.post("/graphql", json={"doc_id": "0" * 32})
        assert unknown.json()["errors"][0]["message"] == "PersistedQueryNotFound"
        # APQ cannot register new documents in trusted mode.
        register = {"query": UNTRUSTED, "extensions": apq(sha(UNTRUSTED))}
        assert codes(await client.post("/graphql", json=register)) == ["PERSISTED_QUERY_NOT_FOUND"]
        assert codes(await client.post("/graphql", json={"extensions": apq(sha(UNTRUSTED))})) == [
            "PERSISTED_QUERY_NOT_FOUND"
        ]


def apq(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def test_client_preset_manifest_by_document_id_and_apq_hash(
    catalog_db: Database, tmp_path: Path
) -> None:
    # graphql-codegen's client preset (persistedDocuments: true): sha256 hash -> document.
    path = write(tmp_path, {sha(LISTING): LISTING, sha(SHOP): SHOP})
    async with make_client(catalog_db, trusted_documents=path) as client:
        for document_id in (sha(LISTING), f"sha256:{sha(LISTING)}"):
            body = {"documentId": document_id, "variables": {"n": 2}}
            assert len(ran(await client.post("/graphql", json=body))["products"]["nodes"]) == 2
        # Apollo Client's persisted-query link, pointed at a trusted-documents server.
        hashed = await client.get(
            "/graphql",
            params={"extensions": json.dumps(apq(sha(SHOP)))},
            headers={"accept": "*/*"},
        )
        assert "shippingMethods" in ran(hashed)
        with_text = {"query": SHOP, "extensions": apq(sha(SHOP))}
        assert "shippingMethods" in ran(await client.post("/graphql", json=with_text))
        # A text that is not the document its hash names is refused...
        swapped = await client.post(
            "/graphql", json={"query": SHOP, "extensions": apq(sha(LISTING))}
        )
        assert codes(swapped) == ["BAD_USER_INPUT"], swapped.text
        # ...and with a query text, a documentId changes nothing: the text is not trusted.
        with_id = {"query": UNTRUSTED, "documentId": sha(SHOP)}
        assert codes(await client.post("/graphql", json=with_id)) == ["PERSISTED_QUERY_NOT_FOUND"]
        for bad in (5, ["x"], "", "../../etc/passwd", "a" * 200, "'; DROP TABLE x; --"):
            response = await client.post("/graphql", json={"documentId": bad})
            assert codes(response) == ["BAD_USER_INPUT"], (bad, response.text)


async def test_apollo_manifest_format(catalog_db: Database, tmp_path: Path) -> None:
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha(SHOP), "name": "Shop", "type": "query", "body": SHOP}],
    }
    async with make_client(catalog_db, trusted_documents=write(tmp_path, manifest)) as client:
        response = await client.post("/graphql", json={"extensions": apq(sha(SHOP))})
        assert "shippingMethods" in ran(response)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "cannot read the manifest"),
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "holds no documents"),
        ({"abc": 5}, "must be a non-empty string"),
        ({"abc": ""}, "must be a non-empty string"),
        ({"abc": "query {"}, "is not valid GraphQL"),
        ({"../../etc/passwd": SHOP}, "must be 1-128 letters"),
        ({"a" * 129: SHOP}, "must be 1-128 letters"),
        ({"format": "apollo-persisted-query-manifest", "operations": 3}, "operations"),
    ],
)
async def test_bad_manifests_are_refused_at_start_up(
    tmp_path: Path, fresh_db: Database, manifest: object, message: str
) -> None:
    path = str(tmp_path / "missing.json") if manifest is None else write(tmp_path, manifest)
    with pytest.raises(SettingsError, match=message) as raised:
        make_client(fresh_db, trusted_documents=path)
    assert "SHOPQL_TRUSTED_DOCUMENTS" in str(raised.value)


def test_shopql_serve_refuses_a_bad_manifest_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/shop.db",
        SECRET_KEY=TEST_SECRET,
        SHOPQL_TRUSTED_DOCUMENTS=write(tmp_path, "[1, 2]"),
    )
    shopql = str(Path(sys.executable).parent / "shopql")
    result = subprocess.run(
        [shopql, "serve", "--no-demo", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SHOPQL_TRUSTED_DOCUMENTS" in lines[0], result.stderr
    assert "must be a JSON object" in lines[0]


async def test_only_trusted_documents_run_over_websocket_too(
    catalog_db: Database, tmp_path: Path
) -> None:
    path = write(tmp_path, {sha(SHOP): SHOP})
    settings = Settings(
        database_url=catalog_db.url,
        secret_key=TEST_SECRET,
        access_log=False,
        trusted_documents=path,
    )
    async with serving(create_app(settings, db=catalog_db)) as base:
        url = base.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            for op_id, query in (("1", UNTRUSTED), ("2", SHOP)):
                message = {"id": op_id, "type": "subscribe", "payload": {"query": query}}
                await ws.send(json.dumps(message))
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
    by_id = {(r["id"], r["type"]): r for r in replies}
    refused = by_id[("1", "error")]["payload"]
    assert [e["extensions"]["code"] for e in refused] == ["PERSISTED_QUERY_NOT_FOUND"]
    assert "shippingMethods" in by_id[("2", "next")]["payload"]["data"]
