"""The `shopql` command: the README's quick start really serves a demo shop."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent
SHOPQL = str(Path(sys.executable).parent / "shopql")

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")), reason="CLI runs on the embedded SQLite default"
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/shop.db"
    env["SECRET_KEY"] = TEST_SECRET
    env.update(extra)
    return env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHOPQL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_migrates_seeds_and_answers_with_graphiql(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, SHOPQL_DEBUG="1")
    proc = subprocess.Popen(
        [SHOPQL, "serve", "--port", str(port), "--demo-products", "80"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        body = httpx.post(
            f"{base}/graphql",
            json={"query": "{ products(first: 3) { totalCount nodes { name } } }"},
        ).json()
        assert body["data"]["products"]["totalCount"] > 70
        assert len(body["data"]["products"]["nodes"]) == 3
        page = httpx.get(f"{base}/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        ready = httpx.get(f"{base}/readyz").json()
        assert ready == {"status": "ok", "database": "ok", "migrations": "ok"}
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so supervisors see it.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in output
    # A second start finds the data and does not seed again.
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        before = conn.execute("SELECT count(*) FROM products").fetchone()[0]
    assert before == 80


def test_export_schema_prints_the_committed_schema(tmp_path: Path) -> None:
    result = _run("export-schema", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "schema.graphql").read_text()


def test_seed_is_deterministic_and_refuses_a_full_catalog(tmp_path: Path) -> None:
    names = []
    for sub in ("a", "b"):
        folder = tmp_path / sub
        folder.mkdir()
        result = _run("seed", "--products", "40", "--seed", "3", env=_env(folder))
        assert result.returncode == 0, result.stderr
        with sqlite3.connect(folder / "shop.db") as conn:
            names.append(conn.execute("SELECT id, name, slug FROM products ORDER BY id").fetchall())
    assert names[0] == names[1] and len(names[0]) == 40
    again = _run("seed", "--products", "40", env=_env(tmp_path / "a"))
    assert again.returncode == 1
    assert "not empty" in again.stderr and "Traceback" not in again.stderr


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        result = _run("migrate", env=_env(tmp_path))
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"products", "product_variants", "categories", "alembic_version"} <= tables


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SHOPQL_DEBUG", "maybe", "SHOPQL_DEBUG"),
        ("SHOPQL_CORS_ORIGINS", "*", "SHOPQL_CORS_ORIGINS"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("SHOPQL_DB_POOL_SIZE", "lots", "SHOPQL_DB_POOL_SIZE"),
        ("SECRET_KEY", "too-short-a-secret", "SECRET_KEY"),
        ("SECRET_KEY", "", "SECRET_KEY"),
        ("SECRET_KEY", "shopql-development-secret-key-never-use-in-production", "SECRET_KEY"),
        ("SHOPQL_SMTP_URL", "http://mail.example", "SHOPQL_SMTP_URL"),
    ],
)
def test_bad_configuration_is_refused_with_a_readable_message(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = _run("migrate", env=_env(tmp_path, **{variable: value}))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
