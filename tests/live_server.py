"""A real `shopql serve` (uvicorn) process on a given database, for tests that need a TCP
server: WebSocket clients, node clients, several processes sharing one database.

    with live_server(url, tmp_path, env={"REDIS_URL": redis_url}) as server:
        httpx.post(server.graphql_url, json={...})
        websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"])

The child gets a clean environment: the parent's variables minus every `SHOPQL_*`,
`DATABASE_URL`, `REDIS_URL` and `PROMETHEUS_MULTIPROC_DIR`, then `DATABASE_URL=url`,
`SECRET_KEY=TEST_SECRET` (so tests can mint tokens), `SHOPQL_DEBUG=1`, and `env` on top.
It serves with `--no-demo`: the database is used as given (migrations are applied).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from conftest import TEST_SECRET

SHOPQL = str(Path(sys.executable).with_name("shopql"))
_DROPPED = ("SHOPQL_", "DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")


@dataclass
class LiveServer:
    proc: subprocess.Popen[bytes]
    port: int
    database_url: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (graceful drain), SIGKILL to the process group after `timeout`; the
        exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(database_url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    clean.update(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        SHOPQL_DEBUG="1",
        PYTHONUNBUFFERED="1",
    )
    clean.update(env or {})
    return clean


def start_server(
    database_url: str,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    args: Sequence[str] = (),
    startup_timeout: float = 60,
) -> LiveServer:
    """Start `shopql serve` and wait until /readyz answers 200; stop it with `.stop()`.
    A port taken between choosing and binding it is retried with another."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = _free_port()
        log = log_dir / f"server-{port}.log"
        command = [SHOPQL, "serve", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--workers", str(workers), "--timeout-graceful-shutdown", "2", *args]
        with log.open("wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                command,
                env=server_env(database_url, env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = LiveServer(proc, port, database_url, log)
        deadline = time.monotonic() + startup_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        server.stop(timeout=5)
        text = server.log_text()
        if "address already in use" not in text.lower() or attempt == 2:
            raise AssertionError(f"shopql serve did not start:\n{text[-4000:]}")
    raise AssertionError("unreachable")


@contextmanager
def live_server(
    database_url: str,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    args: Sequence[str] = (),
) -> Iterator[LiveServer]:
    """`start_server` for the duration of a with-block; stopped (and reaped) after it."""
    server = start_server(database_url, log_dir, env=env, workers=workers, args=args)
    try:
        yield server
    finally:
        server.stop()
