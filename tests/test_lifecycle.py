"""A real `shopql serve`: SIGTERM drains in-flight requests and exits 0; several workers
share one metrics view; the access log is ours, in JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import TEST_SECRET
from prometheus_client.parser import text_string_to_metric_families

SHOPQL = str(Path(sys.executable).parent / "shopql")
TOKEN = "metrics-token-0123456789abcdef"
LISTING = """query Listing { products(first: 100) { nodes { id name description slug
  category { name } images { url alt } variants { sku name price { amount currency } } } } }"""

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")), reason="serves the embedded SQLite default"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/shop.db"
    env["SECRET_KEY"] = TEST_SECRET
    env.update(extra)
    return env


def _serve(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], str, Path]:
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [SHOPQL, "serve", "--port", str(port), *args],
            env=_env(tmp_path, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base, log
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


def _never_accepted(exc: BaseException) -> bool:
    """Refused, or closed before the request was read: the server never took it."""
    if isinstance(exc, httpx.ConnectError):
        return True
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending" in str(exc)


async def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    # 50 heavy listings at once from one address would be rate limited; this is about drains.
    proc, base, log = _serve(tmp_path, "--demo-products", "300", SHOPQL_RATE_LIMIT="0")
    try:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            warm = await client.post("/graphql", json={"query": LISTING})
            assert len(warm.json()["data"]["products"]["nodes"]) == 100
            done: list[float] = []
            some_done = asyncio.Event()

            async def one() -> httpx.Response:
                response = await client.post(
                    "/graphql", json={"query": LISTING, "operationName": "Listing"}
                )
                done.append(time.monotonic())
                if len(done) >= 3:
                    some_done.set()
                return response

            tasks = [asyncio.ensure_future(one()) for _ in range(50)]
            await some_done.wait()
            terminated_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        returncode = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert returncode == 0, output
    completed = []
    for result in results:
        if isinstance(result, BaseException):
            assert _never_accepted(result), repr(result)
            continue
        assert result.status_code == 200, result.text
        assert len(result.json()["data"]["products"]["nodes"]) == 100
        completed.append(result)
    after_sigterm = [t for t in done if t > terminated_at]
    assert len(completed) >= 40 and len(after_sigterm) >= 10, (len(completed), after_sigterm)
    assert "Application shutdown complete" in output
    # Our JSON access lines replace uvicorn's: one per answered request.
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "shopql.access"]
    listings = [line for line in access if line.get("operation") == "Listing"]
    assert len(listings) == len(completed)
    assert all(line["status"] == 200 and line["sql_count"] > 0 for line in listings)
    assert '"POST /graphql HTTP/1.1" 200' not in output


def _total(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_workers_share_one_metrics_view(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, base, log = _serve(
        tmp_path,
        "--workers",
        "2",
        "--demo-products",
        "40",
        SHOPQL_METRICS="1",
        SHOPQL_METRICS_TOKEN=TOKEN,
        TMPDIR=str(scratch),
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(20):
                # A new connection each time, so both workers get some.
                response = httpx.post(
                    f"{base}/graphql",
                    json={"query": "query Ping { __typename }", "operationName": "Ping"},
                )
                assert response.status_code == 200
            assert client.get("/metrics").status_code == 401
            scrape = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert scrape.status_code == 200
        requests = {"operation": "Ping", "outcome": "ok"}
        assert _total(scrape.text, "shopql_graphql_requests_total", **requests) == 20
        assert any(p.name.startswith("shopql-metrics-") for p in scratch.iterdir())
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(60)
    assert returncode == 0, log.read_text()
    assert not any(p.name.startswith("shopql-metrics-") for p in scratch.iterdir())


def test_serve_help_documents_the_lifecycle_flags() -> None:
    result = subprocess.run([SHOPQL, "serve", "--help"], capture_output=True, text=True, check=True)
    assert "--timeout-graceful-shutdown" in result.stdout
    assert "--forwarded-allow-ips" in result.stdout
