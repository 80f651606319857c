"""The real `graphql-ws` npm client (with `ws`) against `shopql serve`: it connects with a
token in connectionParams, subscribes, receives the event a mutation causes, completes
(the server's active-subscriptions gauge returns to 0), and a bad token is closed 4403."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
from accounts_factory import add_user, gid, mint_token
from conftest import DatabaseFactory
from live_server import LiveServer, live_server
from node_clients import CLIENTS, install_node_clients, run_node_tool

from models.db import Database


@pytest.fixture
def server(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    url = databases.copy()
    try:
        with live_server(
            url, tmp_path_factory.mktemp("ws-node"), env={"SHOPQL_METRICS": "1"}
        ) as running:
            yield running
    finally:
        databases.drop(url)


async def test_graphql_ws_client_subscribes_receives_completes_and_is_refused_a_bad_token(
    server: LiveServer,
) -> None:
    install_node_clients()
    db = Database(server.database_url)
    try:
        staff = await add_user(
            db, "ws-node-staff@example.com", is_staff=True, permissions=["MANAGE_PRODUCTS"]
        )
        token = await mint_token(db, staff)
    finally:
        await db.dispose()
    variant = gid("ProductVariant", 1)
    output = run_node_tool(
        [shutil.which("node") or "node", "ws/subscribe.mjs"],
        CLIENTS,
        60,
        WS_URL=server.ws_url,
        HTTP_URL=server.base_url,
        STAFF_TOKEN=token,
        VARIANT_ID=variant,
    )
    seen = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    assert seen["connected"] is True
    assert seen["mutation"] == []
    event = seen["event"]
    assert "errors" not in event
    assert event["data"]["variantStockChanged"]["id"] == variant
    assert event["data"]["variantStockChanged"]["quantityAvailable"] == 17
    assert seen["gaugeAfterComplete"] == 0
    assert seen["badTokenClose"] == {"code": 4403, "reason": "Forbidden"}
