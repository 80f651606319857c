"""The pinned node clients in tests/clients (graphql-codegen, relay-compiler, graphql-http,
graphql-ws + ws, @apollo/client): `npm ci` from package-lock.json once, reused while the
lock file is unchanged; concurrent test runs install once.

Without node/npm the tests that need them are skipped, except in CI (CI=true) where they fail.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS = Path(__file__).parent / "clients"
STAMP = CLIENTS / "node_modules" / ".shopql-package-lock.sha256"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def run_node_tool(args: list[str], cwd: Path, timeout: float, **env: str) -> str:
    """Run a command, fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def install_node_clients() -> Path:
    """tests/clients/node_modules, installed when missing or stale; skips without node."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        if IN_CI:
            pytest.fail("node and npm are required in CI for the node client tests")
        pytest.skip("node/npm not installed: node client tests not run")
    lock = hashlib.sha256((CLIENTS / "package-lock.json").read_bytes()).hexdigest()
    # The lock lives outside node_modules: `npm ci` deletes that whole directory, and a
    # lock file inside it would let a second run lock a fresh file and install at once.
    with open(CLIENTS / ".shopql-install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not STAMP.exists() or STAMP.read_text() != lock:
            run_node_tool([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], CLIENTS, 600)
            STAMP.write_text(lock)
    return CLIENTS / "node_modules"
