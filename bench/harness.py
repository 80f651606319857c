"""`bench/run`: shopql against the floor and PostGraphile 4 (issue 8), one command.

    bench/run [--products 100000] [--duration 10] [--warmup 2] [--workers 2]
              [--memory [--memory-requests 100000]] [--write-results] ...

1. Prepares the catalog (`bench/dataset.py`): a SQLite file and a PostgreSQL database
   seeded by `shopql seed --products N` (seed 42) and migrated by `shopql migrate`, plus a
   customer with 20 orders; reused when they already hold it.
2. Starts, each as its own subprocess on its own port: shopql (uvicorn, 1 worker, no
   debug, no access log) on SQLite and on PostgreSQL; the floor (`bench/floor.py`, the
   same uvicorn flags) on each; PostGraphile 4 on PostgreSQL (`bench/node_modules`,
   installed with `npm ci` in bench/ when missing); and a debug shopql per database,
   used once per operation to read `extensions.sql.count`.
3. Checks, before timing anything, that the floor's JSON equals shopql's `data` for every
   operation (exit 2 with the first difference if not) and that PostGraphile returns the
   same number of items (products, variants, images, orders, lines).
4. Times every (operation, database, system) cell with `bench/load.py`: concurrency 1 for
   median and p99 latency, then concurrency 32 for requests per second, each after a
   warm-up at the same concurrency and bounded by `--duration` seconds.
5. Prints markdown: the table, the ratios the issue sets targets for (shopql / floor
   median <= 2.0 and req/s >= 0.5; shopql at least equal to PostGraphile), optional
   worker scaling (`--workers N`) and memory (`--memory`: RSS of one worker after 1,000
   and after `--memory-requests` requests), and with `--write-results` replaces the
   "bench/run" section of bench/RESULTS.md (or `--results-file`).

`--check-only` stops after step 3 (a minute, no timing): use it after changing shopql.

Exit status: 0 when every target is met, 1 when some target is missed, 2 when the
benchmark itself failed (a server did not start, answers differ, a request failed).
Client and servers share the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import dataset, load
from bench.operations import Operation, identities, operations

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
START_MARK = "<!-- bench/run: start -->"
END_MARK = "<!-- bench/run: end -->"
HIGH_CONCURRENCY = 32

SHOPQL, FLOOR, POSTGRAPHILE = "shopql", "floor", "PostGraphile"
TARGET_MEDIAN_RATIO = 2.0  # shopql median / floor median at most
TARGET_RPS_RATIO = 0.5  # shopql req/s / floor req/s at least


class BenchError(Exception):
    """The benchmark could not run or its systems disagree."""


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(server: Server) -> None:
    """SIGTERM, then SIGKILL the process group this harness created for the server."""
    proc = server.proc
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def start(
    name: str,
    command: list[str],
    *,
    env: dict[str, str],
    port: int,
    log_dir: Path,
    health: tuple[str, str, bytes | None],
    timeout: float = 60.0,
) -> Server:
    """Start `command` in its own process group; return once `health` answers 200."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    log_path = log_dir / f"{slug}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", log_path)
    method, path, body = health
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                headers = {"content-type": "application/json"}
                if client.request(method, path, content=body, headers=headers).status_code == 200:
                    print(f"  {name}: {server.base_url} (pid {proc.pid})", file=sys.stderr)
                    return server
            time.sleep(0.2)
    stop(server)
    raise BenchError(f"{name} did not become healthy within {timeout:.0f} s:\n{_tail(log_path)}")


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", app, "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    # what `shopql serve` runs: each answer's headers and body in one write (schema/server.py)
    command += ["--http", "schema.server:HttpProtocol"]
    command += ["--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def shopql_env(url: str, *, debug: bool) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "SECRET_KEY": dataset.SECRET_KEY,
        "SHOPQL_DEBUG": "1" if debug else "0",
        "SHOPQL_ACCESS_LOG": "0",  # shopql's own access log (uvicorn's is off too)
        # One load generator on one address is exactly what the limiter stops; the floor and
        # PostGraphile have none either.
        "SHOPQL_RATE_LIMIT": "0",
        "PYTHONUNBUFFERED": "1",
    }


def start_shopql(
    url: str, label: str, *, log_dir: Path, workers: int = 1, debug: bool = False
) -> Server:
    port = free_port()
    suffix = f", {workers} workers" if workers > 1 else ""
    return start(
        f"shopql {label}{' debug' if debug else ''}{suffix}",
        uvicorn_command("app:create_app_from_env", port, workers),
        env=shopql_env(url, debug=debug),
        port=port,
        log_dir=log_dir,
        health=("GET", "/healthz", None),
    )


def start_floor(url: str, label: str, *, log_dir: Path) -> Server:
    port = free_port()
    return start(
        f"floor {label}",
        uvicorn_command("bench.floor:create_app", port, 1),
        env=shopql_env(url, debug=False),
        port=port,
        log_dir=log_dir,
        health=("GET", "/healthz", None),
    )


def postgraphile_bin() -> Path:
    binary = BENCH / "node_modules" / ".bin" / "postgraphile"
    if not binary.exists():
        print("Installing PostGraphile (npm ci in bench/)...", file=sys.stderr)
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH)
        if done.returncode != 0 or not binary.exists():
            raise BenchError("npm ci in bench/ failed: PostGraphile is not installed")
    return binary


def start_postgraphile(url: str, *, log_dir: Path) -> Server:
    port = free_port()
    command = [
        str(postgraphile_bin()),
        "--connection", dataset.libpq_url(url),
        "--schema", "public",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--disable-graphiql",
        "--disable-query-log",
        "--dynamic-json",
        "--no-setof-functions-contain-nulls",
        "--disable-default-mutations",
        "--legacy-relations", "omit",
    ]  # fmt: skip
    return start(
        "PostGraphile PostgreSQL",
        command,
        env={"NODE_ENV": "production"},
        port=port,
        log_dir=log_dir,
        health=("POST", "/graphql", b'{"query":"{__typename}"}'),
    )


# --------------------------------------------------------------------------- requests


def access_token(user_id: int, session_id: str) -> str:
    from models.accounts.tokens import create_access_token

    return create_access_token(
        secret=dataset.SECRET_KEY, user_id=user_id, session_id=session_id, ttl=7 * 86400
    )


def requests_for(op: Operation, token: str) -> dict[str, load.Request]:
    json_headers = {"content-type": "application/json"}
    auth = {"authorization": f"Bearer {token}"} if op.needs_auth else {}
    return {
        SHOPQL: load.Request(
            "POST",
            "/graphql",
            orjson.dumps({"query": op.query, "variables": op.variables}),
            {**json_headers, **auth},
        ),
        FLOOR: load.Request("GET", op.floor_path, None, auth),
        POSTGRAPHILE: load.Request(
            "POST",
            "/graphql",
            orjson.dumps({"query": op.pg_query, "variables": op.pg_variables}),
            json_headers,
        ),
    }


async def fetch(base_url: str, request: load.Request) -> httpx.Response:
    async with load.client(base_url, 1) as http:
        return await load.send(http, request)


def _body(system: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(f"{system}: HTTP {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    if system == FLOOR:
        return body
    if body.get("errors") or not isinstance(body.get("data"), dict):
        raise BenchError(f"{system}: {json.dumps(body)[:1500]}")
    return body


def first_difference(a: Any, b: Any, path: str = "data") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {a!r:.200} != {b!r:.200}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            if found := first_difference(a[key], b[key], f"{path}.{key}"):
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if found := first_difference(x, y, f"{path}[{i}]"):
                return found
        return None
    return None if a == b else f"{path}: {a!r:.200} != {b!r:.200}"


@dataclass
class Verified:
    sql: dict[str, str] = field(default_factory=dict)  # system -> statements per request
    counts: tuple[int, ...] = ()


async def verify(
    op: Operation,
    reqs: dict[str, load.Request],
    servers: dict[str, Server],
    debug: Server,
) -> Verified:
    shopql_body = _body(SHOPQL, await fetch(servers[SHOPQL].base_url, reqs[SHOPQL]))
    data = shopql_body["data"]
    counts = op.counts(data)
    if any(have < want for have, want in zip(counts, op.expect, strict=False)):
        raise BenchError(f"{op.label}: shopql returned too little: counts {counts}")
    floor_response = await fetch(servers[FLOOR].base_url, reqs[FLOOR])
    floor_data = _body(FLOOR, floor_response)
    if difference := first_difference(data, floor_data):
        raise BenchError(f"{op.label}: the floor's JSON differs from shopql's data: {difference}")
    result = Verified(counts=counts)
    result.sql[FLOOR] = floor_response.headers.get("x-sql-statements", "?")
    debug_body = _body(SHOPQL, await fetch(debug.base_url, reqs[SHOPQL]))
    if debug_body["data"] != data:
        raise BenchError(f"{op.label}: the debug server answered other data")
    sql = (debug_body.get("extensions") or {}).get("sql") or {}
    result.sql[SHOPQL] = str(sql.get("count", "?"))
    if POSTGRAPHILE in servers:
        pg_data = _body(
            POSTGRAPHILE, await fetch(servers[POSTGRAPHILE].base_url, reqs[POSTGRAPHILE])
        )
        pg_counts = op.pg_counts(pg_data["data"])
        if pg_counts != counts:
            raise BenchError(
                f"{op.label}: PostGraphile returned {pg_counts} items, shopql {counts}"
            )
        if identities(pg_data["data"]) != identities(data):
            raise BenchError(
                f"{op.label}: PostGraphile returned other rows (slugs, SKUs, order numbers) "
                "or another order than shopql"
            )
        result.sql[POSTGRAPHILE] = "1*"
    return result


# --------------------------------------------------------------------------- measuring


@dataclass
class Cell:
    op: Operation
    database: str  # "SQLite" / "PostgreSQL"
    system: str
    sql: str
    low: load.LoadResult  # concurrency 1
    high: load.LoadResult  # concurrency 32


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


ROUND_WARMUP = 0.3  # seconds before each later round: its new connections, nothing more


async def measure_interleaved(
    op: Operation,
    database: str,
    servers: dict[str, Server],
    requests: dict[str, load.Request],
    sql: dict[str, str],
    args: argparse.Namespace,
) -> list[Cell]:
    """Every system of one operation, timed in `args.rounds` alternating rounds.

    Each round times every system for `duration / rounds` seconds, in an order rotated by
    one each round, at concurrency 1 and then (the same way) at concurrency 32. A
    system's latencies are pooled over its rounds and its req/s is its requests over its
    timed seconds. The machine's speed drifts (other tenants, CPU frequency) over the
    tens of seconds a cell takes, and timed one after another the systems would each get
    a different stretch of it; alternating gives them the same. The first round warms
    each system up for `warmup` seconds, later rounds for ROUND_WARMUP."""
    systems = list(servers)
    rounds = max(1, args.rounds)
    share = args.duration / rounds
    results: dict[tuple[str, int], load.LoadResult] = {}
    for concurrency in (1, HIGH_CONCURRENCY):
        for i in range(rounds):
            order = systems[i % len(systems) :] + systems[: i % len(systems)]
            for system in order:
                timed = await load.run(
                    servers[system].base_url,
                    requests[system],
                    concurrency=concurrency,
                    duration=share,
                    warmup=args.warmup if i == 0 else ROUND_WARMUP,
                )
                pooled = results.setdefault(
                    (system, concurrency), load.LoadResult(concurrency, [], 0.0)
                )
                pooled.latencies_ms.extend(timed.latencies_ms)
                pooled.seconds += timed.seconds
    cells = []
    for system in systems:
        low, high = results[(system, 1)], results[(system, HIGH_CONCURRENCY)]
        print(
            f"  {op.key:<11} {database:<10} {system:<12} median {_fmt(low.median)} ms, "
            f"p99 {_fmt(low.percentile(99))} ms, {_fmt(high.rps)} req/s",
            file=sys.stderr,
        )
        cells.append(Cell(op, database, system, sql[system], low, high))
    return cells


def read_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


@dataclass
class Scaling:
    op: Operation
    database: str
    one: float
    many: float


@dataclass
class Memory:
    database: str
    requests: int
    start_kib: int
    after_1000_kib: int
    end_kib: int
    seconds: float


async def measure_memory(
    server: Server, reqs: list[load.Request], *, count: int, database: str
) -> Memory:
    pid = server.proc.pid
    start_kib = read_rss_kib(pid)
    marks: dict[int, int] = {}

    def progress(sent: int) -> None:
        if sent == 1000:
            marks[1000] = read_rss_kib(pid)
        if sent % 10_000 == 0:
            print(
                f"  memory: {sent} requests, RSS {read_rss_kib(pid) / 1024:.1f} MiB",
                file=sys.stderr,
            )

    started = time.perf_counter()
    await load.run_count(server.base_url, reqs, count=count, concurrency=8, progress=progress)
    seconds = time.perf_counter() - started
    end_kib = read_rss_kib(pid)
    return Memory(database, count, start_kib, marks.get(1000, end_kib), end_kib, seconds)


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    info: dict[str, str] = {"cores": str(os.cpu_count())}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError):
        info["load"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    info["os"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    info["python"] = platform.python_version()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    with contextlib.suppress(OSError, ValueError):
        package = BENCH / "node_modules" / "postgraphile" / "package.json"
        info["postgraphile"] = json.loads(package.read_text())["version"]
    return info


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and not math.isnan(denominator) else math.nan


def _judged(value: float, *, at_most: float | None = None, at_least: float | None = None) -> str:
    if math.isnan(value):
        return "n/a"
    ok = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    return f"{value:.2f} {'ok' if ok else '**MISS**'}"


def report(
    args: argparse.Namespace,
    cells: list[Cell],
    datasets: dict[str, dataset.Dataset],
    ops: list[Operation],
    scaling: list[Scaling],
    memory: Memory | None,
    ceiling: load.LoadResult | None,
    info: dict[str, str],
    started: datetime,
) -> tuple[str, bool]:
    """(markdown, every target met)."""
    lines: list[str] = []
    out = lines.append
    took = datetime.now(UTC) - started
    out(f"### bench/run, {args.products:,} products ({started:%Y-%m-%d %H:%M} UTC)")
    out("")
    out(
        f"- machine: {info.get('cores')} cores ({info.get('cpu', '?')}), {info.get('ram', '?')} "
        f"RAM, {info.get('os')}; load average at start {info.get('load', '?')}"
    )
    versions = [f"Python {info['python']}"]
    versions += [d.backend for d in datasets.values()]
    if "node" in info:
        versions.append(f"Node {info['node']}")
    if "postgraphile" in info and not args.no_postgraphile:
        versions.append(f"PostGraphile {info['postgraphile']}")
    out(f"- versions: {', '.join(versions)}")
    out(
        "- load: `bench/load.py` (asyncio streams, HTTP/1.1 keep-alive, one connection per "
        "concurrent client; 0.03-0.1 ms of client CPU per answer) on the same machine; "
        f"per cell {args.warmup:g} s warm-up then {args.duration:g} s at concurrency 1 "
        f"(median, p99), then the same at concurrency {HIGH_CONCURRENCY} (req/s), "
        f"the systems of an operation timed in {args.rounds} alternating rounds "
        f"(a {ROUND_WARMUP:g} s warm-up before each later one); "
        f"one uvicorn worker per Python server; run took "
        f"{timedelta(seconds=int(took.total_seconds()))}"
    )
    out(f"- command: `{shlex.join(['bench/run', *args.argv])}`")
    out(
        "- SQL = statements per request: shopql from `extensions.sql.count` (debug instance), "
        "the floor from its own count; \\* PostGraphile compiles each query to one statement"
    )
    if ceiling is not None:
        out(
            f"- client ceiling: {ceiling.rps:.0f} req/s at concurrency {HIGH_CONCURRENCY} against "
            "a route that does nothing (the floor's `/healthz`); req/s near it are limited by "
            "the load generator, not the server"
        )
    if args.note:
        out(f"- note: {args.note}")
    out("")
    out(
        "| operation | database | system | median ms | p99 ms | req/s (c=32) | SQL "
        "| n (c=1 / c=32) |"
    )
    out("|---|---|---|---:|---:|---:|---:|---:|")
    for cell in cells:
        out(
            f"| `{cell.op.label}` | {cell.database} | {cell.system} | {_fmt(cell.low.median)} | "
            f"{_fmt(cell.low.percentile(99))} | {_fmt(cell.high.rps)} | {cell.sql} | "
            f"{cell.low.n} / {cell.high.n} |"
        )
    out("")
    by_key = {(c.op.key, c.database, c.system): c for c in cells}
    all_met = True
    out(
        f"Ratios (targets: shopql / floor median <= {TARGET_MEDIAN_RATIO}, req/s >= "
        f"{TARGET_RPS_RATIO}; shopql / PostGraphile median <= 1.0, req/s >= 1.0):"
    )
    out("")
    out(
        "| operation | database | shopql/floor median | shopql/floor req/s "
        "| shopql/PostGraphile median | shopql/PostGraphile req/s |"
    )
    out("|---|---|---:|---:|---:|---:|")
    for database in datasets:
        for op in ops:
            shop = by_key.get((op.key, database, SHOPQL))
            floor = by_key.get((op.key, database, FLOOR))
            pg = by_key.get((op.key, database, POSTGRAPHILE))
            if shop is None:
                continue
            ratios = []
            checks = []
            if floor is not None:
                m = _ratio(shop.low.median, floor.low.median)
                r = _ratio(shop.high.rps, floor.high.rps)
                ratios += [
                    _judged(m, at_most=TARGET_MEDIAN_RATIO),
                    _judged(r, at_least=TARGET_RPS_RATIO),
                ]
                checks += [m <= TARGET_MEDIAN_RATIO, r >= TARGET_RPS_RATIO]
            else:
                ratios += ["n/a", "n/a"]
            if pg is not None:
                m = _ratio(shop.low.median, pg.low.median)
                r = _ratio(shop.high.rps, pg.high.rps)
                ratios += [_judged(m, at_most=1.0), _judged(r, at_least=1.0)]
                checks += [m <= 1.0, r >= 1.0]
            else:
                ratios += ["-", "-"]
            all_met = all_met and all(checks)
            out(f"| `{op.label}` | {database} | {' | '.join(ratios)} |")
    out("")
    if not args.no_postgraphile and "PostgreSQL" in datasets:
        out("PostGraphile's queries are the closest equivalents its schema allows:")
        out("")
        for op in ops:
            out(f"- `{op.label}`: {op.pg_note}")
        out("")
    if scaling:
        out(
            f"Scaling, shopql req/s at concurrency {HIGH_CONCURRENCY}, 1 -> {args.workers} workers:"
        )
        out("")
        out(f"| operation | database | 1 worker | {args.workers} workers | ratio |")
        out("|---|---|---:|---:|---:|")
        for s in scaling:
            out(
                f"| `{s.op.label}` | {s.database} | {_fmt(s.one)} | {_fmt(s.many)} | "
                f"{_fmt(_ratio(s.many, s.one), 2)} |"
            )
        out("")
    if memory is not None:
        mib = 1024
        out(
            f"Memory, one shopql worker on {memory.database}, {memory.requests:,} requests "
            f"(every operation in turn, concurrency 8, {memory.seconds:.0f} s): RSS "
            f"{memory.start_kib / mib:.1f} MiB at start, {memory.after_1000_kib / mib:.1f} MiB "
            f"after 1,000, {memory.end_kib / mib:.1f} MiB after {memory.requests:,} "
            f"({(memory.end_kib - memory.after_1000_kib) / mib:+.1f} MiB)."
        )
        out("")
    out(f"**Verdict: {'every target met' if all_met else 'some target MISSED'}.**")
    return "\n".join(lines) + "\n", all_met


def write_results(path: Path, markdown: str) -> None:
    section = f"{START_MARK}\n## bench/run (issue 8)\n\n{markdown}{END_MARK}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if START_MARK in text and END_MARK in text:
        head, rest = text.split(START_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        text = head + section + tail.lstrip("\n")
        if tail.strip():
            text = head + section + "\n" + tail.lstrip("\n")
    else:
        first, sep, rest = text.partition("\n")
        text = first + sep + "\n" + section + ("\n" + rest.lstrip("\n") if rest.strip() else "")
    path.write_text(text)
    print(f"Wrote the results to {path}", file=sys.stderr)


# --------------------------------------------------------------------------- main


def keep(running: list[Server], server: Server) -> Server:
    running.append(server)
    return server


@contextlib.contextmanager
def servers_stopped(started: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in reversed(started):
            stop(server)
        started.clear()


async def bench(args: argparse.Namespace) -> int:
    started_at = datetime.now(UTC)
    info = machine()
    log_dir = args.log_dir
    databases = {
        "SQLite": dataset.sqlite_url(args.products),
        "PostgreSQL": dataset.postgres_url(args.products, args.pg_server),
    }
    databases = {k: v for k, v in databases.items() if k.lower() in args.databases}
    if not args.no_postgraphile and "PostgreSQL" in databases:
        postgraphile_bin()
        info.update({k: v for k, v in machine().items() if k == "postgraphile"})
    datasets = {
        name: await dataset.prepare(url, products=args.products, rebuild=args.rebuild)
        for name, url in databases.items()
    }
    cells: list[Cell] = []
    scaling: list[Scaling] = []
    memory: Memory | None = None
    ceiling: load.LoadResult | None = None
    running: list[Server] = []
    pattern = re.compile(args.only) if args.only else None
    ops: list[Operation] = []
    for name, data in datasets.items():
        ops = [
            op
            for op in operations(product_slug=data.product_slug, user_id=data.user_id)
            if pattern is None or pattern.search(op.key)
        ]
        token = access_token(data.user_id, data.session_id)
        print(f"{name}: starting servers", file=sys.stderr)
        with servers_stopped(running):
            servers: dict[str, Server] = {}
            servers[SHOPQL] = keep(running, start_shopql(data.url, name, log_dir=log_dir))
            servers[FLOOR] = keep(running, start_floor(data.url, name, log_dir=log_dir))
            if name == "PostgreSQL" and not args.no_postgraphile:
                servers[POSTGRAPHILE] = keep(running, start_postgraphile(data.url, log_dir=log_dir))
            debug = keep(running, start_shopql(data.url, name, log_dir=log_dir, debug=True))
            print(f"{name}: checking answers", file=sys.stderr)
            checked = {}
            for op in ops:
                checked[op.key] = await verify(op, requests_for(op, token), servers, debug)
                print(f"  {op.key}: same data, items {checked[op.key].counts}", file=sys.stderr)
            stop(debug)
            if args.check_only:
                continue
            print(f"{name}: timing", file=sys.stderr)
            if ceiling is None:
                ceiling = await load.run(
                    servers[FLOOR].base_url,
                    load.Request("GET", "/healthz"),
                    concurrency=HIGH_CONCURRENCY,
                    duration=args.duration,
                    warmup=args.warmup,
                    check=lambda r: None if r.status_code == 200 else f"HTTP {r.status_code}",
                )
                print(f"  client ceiling: {ceiling.rps:.0f} req/s", file=sys.stderr)
            for op in ops:
                cells += await measure_interleaved(
                    op, name, servers, requests_for(op, token), checked[op.key].sql, args
                )
        if args.workers > 1 and not args.check_only:
            with servers_stopped(running):
                many = keep(
                    running, start_shopql(data.url, name, log_dir=log_dir, workers=args.workers)
                )
                print(f"{name}: timing shopql with {args.workers} workers", file=sys.stderr)
                for op in ops:
                    result = await load.run(
                        many.base_url,
                        requests_for(op, token)[SHOPQL],
                        concurrency=HIGH_CONCURRENCY,
                        duration=args.duration,
                        warmup=args.warmup,
                    )
                    one = next(
                        c
                        for c in cells
                        if c.op.key == op.key and c.database == name and c.system == SHOPQL
                    )
                    scaling.append(Scaling(op, name, one.high.rps, result.rps))
        if args.memory and name == args.memory_database and not args.check_only:
            with servers_stopped(running):
                server = keep(running, start_shopql(data.url, name, log_dir=log_dir))
                print(f"{name}: memory, {args.memory_requests} requests", file=sys.stderr)
                all_ops = operations(product_slug=data.product_slug, user_id=data.user_id)
                reqs = [requests_for(op, token)[SHOPQL] for op in all_ops]
                memory = await measure_memory(
                    server, reqs, count=args.memory_requests, database=name
                )
    if args.check_only:
        print("Every answer agrees (shopql = floor; PostGraphile: same rows).", file=sys.stderr)
        return 0
    markdown, met = report(args, cells, datasets, ops, scaling, memory, ceiling, info, started_at)
    sys.stdout.write(markdown)
    if args.write_results:
        write_results(Path(args.results_file), markdown)
    return 0 if met else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="shopql vs a hand-written floor vs PostGraphile 4 (issue 8).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--products", type=int, default=100_000, help="catalog size")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds timed per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds per operation that share its --duration (1: each system "
        "timed in one stretch, one after another)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="also time shopql with this many workers (> 1)"
    )
    parser.add_argument("--memory", action="store_true", help="measure one worker's RSS")
    parser.add_argument("--memory-requests", type=int, default=100_000, metavar="N")
    parser.add_argument("--memory-database", choices=("SQLite", "PostgreSQL"), default="PostgreSQL")
    parser.add_argument(
        "--databases",
        default="sqlite,postgresql",
        type=lambda s: {part.strip().lower() for part in s.split(",") if part.strip()},
        help="which of sqlite,postgresql to benchmark",
    )
    parser.add_argument("--only", metavar="REGEX", help="operations whose key matches")
    parser.add_argument("--no-postgraphile", action="store_true")
    parser.add_argument(
        "--check-only", action="store_true", help="only check that the answers agree"
    )
    parser.add_argument("--pg-server", default=dataset.PG_SERVER, help="PostgreSQL server URL")
    parser.add_argument("--rebuild", action="store_true", help="re-seed the databases")
    parser.add_argument("--log-dir", help="server logs (default: a new temporary directory)")
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    parser.add_argument("--results-file", default=str(RESULTS))
    parser.add_argument("--note", help="a line added to the report (e.g. what was running)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.products < 100:
        parser.error("--products must be at least 100")
    if not args.databases <= {"sqlite", "postgresql"} or not args.databases:
        parser.error("--databases takes sqlite, postgresql or both")
    if args.memory and args.memory_database.lower() not in args.databases:
        parser.error("--memory-database must be one of --databases")
    if args.memory_requests < 1000:
        parser.error("--memory-requests must be at least 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    args.log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="shopql-bench-run-"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"Server logs: {args.log_dir}", file=sys.stderr)
    try:
        return asyncio.run(bench(args))
    except (BenchError, dataset.DatasetError, load.LoadError) as exc:
        print(f"bench/run: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/run: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
