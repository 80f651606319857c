"""`shopql check` and `/readyz`: configuration, secret key, database, migrations, Redis."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import TEST_SECRET, make_client

from models.db import Database
from schema.observability import Check, run_checks

SHOPQL = str(Path(sys.executable).parent / "shopql")
ON_POSTGRES = bool(os.environ.get("TEST_DATABASE_URL"))


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def set_revision(db: Database, revision: str) -> None:
    async with db.transaction() as conn:
        await conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{revision}'")


async def test_every_check_passes_on_a_migrated_database(fresh_url: str) -> None:
    checks = await run_checks({"DATABASE_URL": fresh_url, "SECRET_KEY": TEST_SECRET})
    assert [c.name for c in checks] == ["configuration", "secret key", "database", "migrations"]
    assert all(c.ok for c in checks), checks


async def test_pending_migrations_fail_the_check_and_readiness(
    fresh_url: str, fresh_db: Database
) -> None:
    await set_revision(fresh_db, "0002")
    checks = by_name(await run_checks({"DATABASE_URL": fresh_url, "SECRET_KEY": TEST_SECRET}))
    assert checks["database"].ok
    assert not checks["migrations"].ok
    assert "pending" in checks["migrations"].detail
    assert "shopql migrate" in checks["migrations"].detail
    async with make_client(fresh_db) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "ok", "migrations": "pending"}


async def test_failures_are_reported_one_by_one(fresh_url: str) -> None:
    checks = await run_checks(
        {
            "DATABASE_URL": fresh_url,
            "SECRET_KEY": "short-secret",
            "REDIS_URL": f"redis://:hunter2-redis@127.0.0.1:{closed_port()}/0",
        }
    )
    found = by_name(checks)
    assert not found["configuration"].ok and "SECRET_KEY" in found["configuration"].detail
    assert not found["secret key"].ok and "at least 32" in found["secret key"].detail
    # The database is still checked with the URL given.
    assert found["database"].ok and found["migrations"].ok
    redis = found["redis"]
    assert not redis.ok
    if importlib.util.find_spec("redis") is None:
        assert "not installed" in redis.detail
    else:
        assert "unreachable" in redis.detail
    assert all("hunter2" not in c.detail for c in checks)


async def test_the_development_key_is_accepted_in_debug_only(fresh_url: str) -> None:
    debug = by_name(await run_checks({"DATABASE_URL": fresh_url, "SHOPQL_DEBUG": "1"}))
    assert debug["secret key"].ok and "debug" in debug["secret key"].detail
    assert debug["configuration"].ok
    production = by_name(await run_checks({"DATABASE_URL": fresh_url}))
    assert not production["secret key"].ok and not production["configuration"].ok


async def test_an_unreachable_database_is_reported_without_its_password() -> None:
    url = f"postgresql+asyncpg://shop:s3cret-pw@127.0.0.1:{closed_port()}/shop"
    found = by_name(await run_checks({"DATABASE_URL": url, "SECRET_KEY": TEST_SECRET}))
    assert not found["database"].ok and "unreachable" in found["database"].detail
    assert not found["migrations"].ok
    assert all("s3cret-pw" not in c.detail for c in found.values())


async def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    url = f"sqlite+aiosqlite:///{path}"
    found = by_name(await run_checks({"DATABASE_URL": url, "SECRET_KEY": TEST_SECRET}))
    assert not found["database"].ok and "does not exist" in found["database"].detail
    assert not path.exists()


@pytest.mark.skipif(ON_POSTGRES, reason="the CLI runs on the embedded SQLite default")
def test_the_command_exits_0_with_a_summary_or_1_with_readable_failures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    env.pop("REDIS_URL", None)
    env.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/shop.db", SECRET_KEY=TEST_SECRET)

    def check(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SHOPQL, "check"], env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    missing = check()
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "FAIL  database" in missing.stdout and "Traceback" not in missing.stderr
    migrated = subprocess.run(
        [SHOPQL, "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    good = check()
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all 4 checks passed" in good.stdout
    bad = check(SECRET_KEY="weak", SHOPQL_METRICS="1")
    assert bad.returncode == 1
    assert "FAIL  configuration" in bad.stdout and "FAIL  secret key" in bad.stdout
    assert "2 of 4 checks failed" in bad.stdout and "Traceback" not in bad.stderr


async def test_readyz_reports_facts_never_secrets(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "migrations": "ok"}
