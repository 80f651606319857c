"""End-to-end storefront read benchmark: the real `shopql serve` process, driven over HTTP.

    .venv/bin/python bench/catalog.py [--database-url URL] [--products 100000]
                                      [--requests 200] [--concurrency 1]

1. Prepares a catalog of N products: SQLite at /tmp/shopql-bench-<N>-seed<S>.db by default,
   or PostgreSQL with `--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/shopql_bench`
   (the database is created when missing). A database that already holds exactly N products
   is reused; an empty one is migrated and seeded (`models.seed.seed_catalog`). A database
   holding some other number of products is rebuilt only if it is the default SQLite file
   or `--reset` is given. On PostgreSQL a freshly seeded database gets `VACUUM ANALYZE`
   (what autovacuum would do within a minute in production).
2. Starts `shopql serve --no-demo` on a free port with `SHOPQL_DEBUG=1` (responses then
   carry `extensions.sql.count` / `extensions.sql.ms`), waits for /healthz, and always
   stops it at the end.
3. For every operation: warm-up requests, then `--requests` timed requests at
   `--concurrency` (each operation also stops after `--max-seconds`). Every response is
   checked (HTTP 200, no GraphQL errors, the expected page size).
4. Prints a markdown table and a verdict for the target: `products(first: 24)` median and
   search median under 50 ms, and deep-page time / page-1 time close to 1 (keyset paging).

Other options: `--search TEXT` (repeatable) replaces the default searches ("linen",
"linen shirt"); `--only REGEX` times only the operations whose name matches (page 1 is
kept as the baseline of any deep page timed); `--deep-pages 50,400`; `--reset` rebuilds
the database; `--output FILE` also writes the report there. Ctrl-C / SIGTERM stop the
server before exiting.

Latency is measured by the client (request sent -> whole response body received), so it
includes HTTP, GraphQL execution, serialisation and every SQL statement. Client and server
share the machine's cores.

Exit status: 0 when the target is met, 1 when it is missed, 2 when the benchmark failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0  # the target for a median storefront listing / search
DEPTH_RATIO_LIMIT = 1.5  # deep page median / page-1 median above this means depth costs
PAGE_SIZE = 24
DEFAULT_SEARCHES = ("linen", "linen shirt")
DEFAULT_DEEP_PAGES = (50, 400)

PRODUCT_FIELDS = """
  id name slug
  priceRange { start { amount currency } stop { amount } }
  isAvailable
  variants { id sku name price { amount } quantityAvailable }
  images { url alt }
  category { name }
"""

PRODUCTS_QUERY = f"""
query BenchProducts($first: Int!, $after: String, $sortBy: ProductSortBy, $search: String) {{
  products(first: $first, after: $after, sortBy: $sortBy, search: $search) {{
    edges {{ node {{ {PRODUCT_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""

WALK_QUERY = """
query BenchWalk($first: Int!, $after: String, $sortBy: ProductSortBy) {
  products(first: $first, after: $after, sortBy: $sortBy) {
    pageInfo { hasNextPage endCursor }
  }
}
"""

CATEGORY_QUERY = """
query BenchCategory($slug: String!) {
  category(slug: $slug) {
    name
    children(first: 20) { nodes { name } }
    products(first: 24) { edges { node { name priceRange { start { amount } } } } }
  }
}
"""

PRODUCT_QUERY = f"""
query BenchProduct($slug: String!) {{
  product(slug: $slug) {{
    {PRODUCT_FIELDS}
    description
    collections {{ name }}
  }}
}}
"""

DISCOVER_QUERY = """
query BenchDiscover {
  categories(level: 0, first: 1) { nodes { slug } }
  products(first: 1) { nodes { slug } }
}
"""


class BenchError(Exception):
    """The benchmark could not run (bad database, server failure, wrong response)."""


# --------------------------------------------------------------------------- database


@dataclass(frozen=True)
class Prepared:
    url: str
    backend: str  # "SQLite 3.40.1" / "PostgreSQL 15.2"
    products: int
    seeded: bool
    seed_seconds: float


def default_sqlite_url(products: int, seed: int) -> str:
    path = Path(tempfile.gettempdir()) / f"shopql-bench-{products}-seed{seed}.db"
    return f"sqlite+aiosqlite:///{path}"


def _remove_sqlite_files(url: str) -> None:
    database = make_url(url).database
    if not database:
        raise BenchError(f"not a SQLite file database: {url}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(database + suffix).unlink(missing_ok=True)


async def _pg_admin(url: str, *statements: str) -> list[Any]:
    """Run statements on the server's maintenance database; the last one's rows."""
    admin = make_url(url).set(database="postgres")
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    rows: list[Any] = []
    try:
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.exec_driver_sql(statement)
                rows = list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()
    return rows


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _ensure_pg_database(url: str, *, recreate: bool) -> None:
    name = make_url(url).database
    if not name:
        raise BenchError(f"the PostgreSQL URL names no database: {url}")
    if recreate:
        print(f"Recreating PostgreSQL database {name!r}...", file=sys.stderr)
        await _pg_admin(
            url,
            f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)",
            f"CREATE DATABASE {_quoted(name)}",
        )
        return
    found = await _pg_admin(
        url, f"SELECT 1 FROM pg_database WHERE datname = '{name.replace(chr(39), chr(39) * 2)}'"
    )
    if not found:
        print(f"Creating PostgreSQL database {name!r}...", file=sys.stderr)
        await _pg_admin(url, f"CREATE DATABASE {_quoted(name)}")


async def _migrate_and_count(url: str) -> tuple[int, str]:
    """Apply migrations; return (number of products, backend description)."""
    from models.catalog.tables import products
    from models.db import Database
    from models.migrate import upgrade

    db = Database(url, pool_size=2)
    try:
        await upgrade(db)
        async with db.read() as conn:
            count = int(
                (await conn.execute(sa.select(sa.func.count()).select_from(products))).scalar_one()
            )
            if db.is_sqlite:
                version = (await conn.exec_driver_sql("select sqlite_version()")).scalar_one()
                backend = f"SQLite {version}"
            else:
                version = (await conn.exec_driver_sql("show server_version")).scalar_one()
                backend = f"PostgreSQL {version}"
    finally:
        await db.dispose()
    return count, backend


async def _seed(url: str, *, products: int, seed: int, analyze: bool) -> None:
    from models.db import Database
    from models.seed import seed_catalog

    db = Database(url, pool_size=2)
    try:
        summary = await seed_catalog(db, products=products, seed=seed, progress=True)
        print(
            f"Seeded {summary.products} products, {summary.variants} variants, "
            f"{summary.images} images, {summary.categories} categories.",
            file=sys.stderr,
        )
        if analyze and not db.is_sqlite:
            print("VACUUM ANALYZE...", file=sys.stderr)
            autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
            async with autocommit.connect() as conn:
                await conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await db.dispose()


async def prepare_database(
    url: str, *, products: int, seed: int, reset: bool, may_rebuild: bool, analyze: bool
) -> Prepared:
    is_sqlite = url.startswith("sqlite")
    if is_sqlite and reset:
        _remove_sqlite_files(url)
    elif not is_sqlite:
        await _ensure_pg_database(url, recreate=reset)
    count, backend = await _migrate_and_count(url)
    if count == products:
        print(f"Reusing {backend} catalog with {count} products.", file=sys.stderr)
        return Prepared(url, backend, count, seeded=False, seed_seconds=0.0)
    if count:
        if not may_rebuild:
            raise BenchError(
                f"the database holds {count} products, not {products}: pass --reset to rebuild "
                "it (this deletes everything in it) or pick another --database-url"
            )
        print(f"The database holds {count} products, not {products}: rebuilding.", file=sys.stderr)
        if is_sqlite:
            _remove_sqlite_files(url)
        else:
            await _ensure_pg_database(url, recreate=True)
        count, backend = await _migrate_and_count(url)
    print(f"Seeding {products} products into {backend} (seed {seed})...", file=sys.stderr)
    started = time.perf_counter()
    await _seed(url, products=products, seed=seed, analyze=analyze)
    return Prepared(url, backend, products, seeded=True, seed_seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shopql_command() -> list[str]:
    script = Path(sys.executable).parent / "shopql"
    if script.exists():
        return [str(script)]
    return [sys.executable, str(ROOT / "app.py")]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL the server's own group."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created for it, nothing else
        proc.wait(timeout=15)


@contextlib.contextmanager
def running_server(url: str, *, log_path: Path, startup_timeout: float) -> Iterator[str]:
    """Start `shopql serve` against `url`; yield its base URL; always stop it."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "SHOPQL_DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    command = [*shopql_command(), "serve", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
    base_url = f"http://127.0.0.1:{port}"
    print(f"Starting server: {' '.join(command)} (log: {log_path})", file=sys.stderr)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(proc, base_url, log_path=log_path, timeout=startup_timeout)
        yield base_url
    finally:
        _stop(proc)
        status = proc.returncode
        how = f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"
        print(f"Server stopped ({how}).", file=sys.stderr)


def _wait_healthy(
    proc: subprocess.Popen[bytes], base_url: str, *, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(
                    f"the server exited with status {proc.returncode}:\n{_tail(log_path)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise BenchError(
        f"the server did not answer /healthz within {timeout:.0f} s:\n{_tail(log_path)}"
    )


# --------------------------------------------------------------------------- measuring

Check = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class Operation:
    name: str
    query: str
    variables: dict[str, Any]
    check: Check
    group: str = ""  # "page1", "search", "depth:<baseline op name>" for the verdict


@dataclass
class Result:
    operation: Operation
    latencies_ms: list[float] = field(default_factory=list)
    sql_counts: list[int] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.latencies_ms)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies_ms)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    @property
    def rps(self) -> float:
        return self.n / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def sql_label(self) -> str:
        if not self.sql_counts:
            return "?"
        low, high = min(self.sql_counts), max(self.sql_counts)
        return str(low) if low == high else f"{low}-{high}"

    @property
    def sql_ms_median(self) -> float | None:
        return statistics.median(self.sql_ms) if self.sql_ms else None


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def expect_edges(path: str, count: int | None) -> Check:
    """The connection at `path` has `count` edges (any number, at least one, when None)."""

    def check(data: dict[str, Any]) -> str | None:
        edges = _dig(data, path)
        if not isinstance(edges, list):
            return f"{path} is missing"
        if count is None and not edges:
            return f"{path} is empty"
        if count is not None and len(edges) != count:
            return f"{path} has {len(edges)} edges, expected {count}"
        return None

    return check


def expect_object(path: str) -> Check:
    def check(data: dict[str, Any]) -> str | None:
        return None if isinstance(_dig(data, path), dict) else f"{path} is null or missing"

    return check


async def graphql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """POST one query; (response body, client latency in ms). Raises on any error."""
    started = time.perf_counter()
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchError(f"HTTP {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise BenchError(f"GraphQL errors: {body['errors']}")
    if not isinstance(body.get("data"), dict):
        raise BenchError(f"no data in the response: {str(body)[:500]}")
    return body, elapsed_ms


async def warm_up(
    client: httpx.AsyncClient, op: Operation, count: int, *, max_seconds: float
) -> None:
    deadline = time.perf_counter() + max_seconds
    for _ in range(count):
        if time.perf_counter() > deadline:
            break
        body, _ = await graphql(client, op.query, op.variables)
        if problem := op.check(body["data"]):
            raise BenchError(f"{op.name}: {problem}")


async def measure(
    client: httpx.AsyncClient,
    op: Operation,
    *,
    warmup: int,
    requests: int,
    concurrency: int,
    max_seconds: float,
) -> Result:
    result = Result(op)

    async def drive(count: int, record: bool, deadline: float) -> None:
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                body, elapsed_ms = await graphql(client, op.query, op.variables)
                problem = op.check(body["data"])
                if problem:
                    raise BenchError(f"{op.name}: {problem}")
                if record:
                    result.latencies_ms.append(elapsed_ms)
                    sql = _dig(body, "extensions.sql") or {}
                    if isinstance(sql.get("count"), int):
                        result.sql_counts.append(sql["count"])
                    if isinstance(sql.get("ms"), int | float):
                        result.sql_ms.append(float(sql["ms"]))

        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(count, 1)))))

    await drive(warmup, False, time.perf_counter() + max_seconds)
    started = time.perf_counter()
    await drive(requests, True, started + max_seconds)
    result.wall_seconds = time.perf_counter() - started
    if not result.n:
        raise BenchError(f"{op.name}: no request completed within {max_seconds} s")
    return result


async def walk_cursors(
    client: httpx.AsyncClient, pages: Sequence[int], sort_by: dict[str, str] | None
) -> dict[int, str]:
    """The `after` cursor that fetches each page (>= 2): page k-1's endCursor, walking forward."""
    wanted = sorted({p for p in pages if p >= 2})
    cursors: dict[int, str] = {}
    after: str | None = None
    for page in range(1, (wanted[-1] if wanted else 1)):
        variables = {"first": PAGE_SIZE, "after": after, "sortBy": sort_by}
        body, _ = await graphql(client, WALK_QUERY, variables)
        info = body["data"]["products"]["pageInfo"]
        after = info["endCursor"]
        if not info["hasNextPage"] or after is None:
            print(f"  the listing ends at page {page}; deeper pages skipped", file=sys.stderr)
            break
        if page + 1 in wanted:
            cursors[page + 1] = after
    return cursors


def _sort_label(sort_by: dict[str, str] | None) -> str:
    return "" if sort_by is None else f", sortBy: {sort_by['field']} {sort_by['direction']}"


async def build_operations(
    client: httpx.AsyncClient,
    *,
    deep_pages: Sequence[int],
    searches: Sequence[str],
    selected: Callable[[str], bool],
) -> list[Operation]:
    """The operations to time (those whose name `selected` accepts), cursors collected."""
    body, _ = await graphql(client, DISCOVER_QUERY, {})
    roots = body["data"]["categories"]["nodes"]
    listed = body["data"]["products"]["nodes"]
    if not roots or not listed:
        raise BenchError("the catalog has no level-0 category or no visible product")
    category_slug, product_slug = roots[0]["slug"], listed[0]["slug"]

    def products_op(
        name: str,
        *,
        first: int = PAGE_SIZE,
        after: str | None = None,
        sort_by: dict[str, str] | None = None,
        search: str | None = None,
        group: str = "",
        exact: bool = True,
    ) -> Operation:
        variables = {"first": first, "after": after, "sortBy": sort_by, "search": search}
        check = expect_edges("products.edges", first if exact else None)
        return Operation(name, PRODUCTS_QUERY, variables, check, group)

    ops: list[Operation] = []
    sorts: list[dict[str, str] | None] = [
        None,
        {"field": "PRICE", "direction": "ASC"},
        {"field": "NAME", "direction": "ASC"},
    ]
    for sort_by in sorts:
        label = _sort_label(sort_by)
        page1 = f"products(first: 24{label}) page 1"
        # The default order at every configured depth; the other orders at the deepest one.
        pages = [
            page
            for page in (deep_pages if sort_by is None else deep_pages[-1:])
            if selected(f"products(first: 24{label}) page {page}")
        ]
        if pages or selected(page1):  # page 1 is also the deep pages' baseline
            group = "page1" if sort_by is None else ""
            ops.append(products_op(page1, sort_by=sort_by, group=group))
        if not pages:
            continue
        order = label.removeprefix(", ") or "default order"
        print(f"Walking cursors ({order}) to page {max(pages)}...", file=sys.stderr)
        cursors = await walk_cursors(client, pages, sort_by)
        ops.extend(
            products_op(
                f"products(first: 24{label}) page {page}",
                after=cursors[page],
                sort_by=sort_by,
                group=f"depth:{page1}",
                exact=False,  # the last page of a small catalog may be short
            )
            for page in sorted(cursors)
        )
    for words in searches:
        name = f'products(first: 24, search: "{words}")'
        ops.append(products_op(name, search=words, group="search", exact=False))
    ops.append(products_op("products(first: 100)", first=100))
    ops.append(
        Operation(
            f'category(slug: "{category_slug}") + children + products(first: 24)',
            CATEGORY_QUERY,
            {"slug": category_slug},
            expect_edges("category.products.edges", PAGE_SIZE),
        )
    )
    ops.append(
        Operation(
            f'product(slug: "{product_slug}")',
            PRODUCT_QUERY,
            {"slug": product_slug},
            expect_object("product"),
        )
    )
    deep = {op.group.removeprefix("depth:") for op in ops if op.group.startswith("depth:")}
    return [op for op in ops if selected(op.name) or op.name in deep]


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Verdict:
    lines: list[str]
    met: bool


def verdict(results: Sequence[Result], *, partial: bool = False) -> Verdict:
    by_name = {r.operation.name: r for r in results}
    lines: list[str] = []
    met = True

    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for r in results:
        if r.operation.group in ("page1", "search"):
            ok = r.median < TARGET_MS
            met &= ok
            lines.append(
                f"- {mark(ok)}: {r.operation.name} median {r.median:.1f} ms "
                f"(target < {TARGET_MS:.0f} ms)"
            )
    for r in results:
        group = r.operation.group
        if group.startswith("depth:") and (base := by_name.get(group.removeprefix("depth:"))):
            ratio = r.median / base.median
            ok = ratio <= DEPTH_RATIO_LIMIT
            met &= ok
            lines.append(
                f"- {mark(ok)}: {r.operation.name} / page 1 = {ratio:.2f} "
                f"({r.median:.1f} ms vs {base.median:.1f} ms; limit {DEPTH_RATIO_LIMIT})"
            )
    if partial and met:
        lines.append("\n**Verdict: no miss among the operations timed (partial run, --only).**")
    else:
        lines.append(f"\n**Verdict: target {'MET' if met else 'MISSED'}.**")
    return Verdict(lines, met)


def render(
    results: Sequence[Result], prepared: Prepared, args: argparse.Namespace, started: datetime
) -> str:
    out = [
        f"### {prepared.backend}, {prepared.products:,} products",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores, "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        f"- {args.requests} timed requests per operation, after {args.warmup} warm-up requests "
        "per operation (one round over all operations, then again just before timing it), "
        f"concurrency {args.concurrency}; client and server on the same machine",
        (
            f"- database: seeded for this run in {prepared.seed_seconds:.0f} s"
            if prepared.seeded
            else "- database: reused (already held the catalog)"
        ),
        "- latency = client-side, request sent to full response received; "
        "SQL = `extensions.sql` (statements per request; server-side ms in SQL, median)",
        "",
        "| operation | SQL stmts | SQL ms | median ms | p95 ms | p99 ms | req/s | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        sql_ms = "?" if r.sql_ms_median is None else f"{r.sql_ms_median:.1f}"
        out.append(
            f"| `{r.operation.name}` | {r.sql_label} | {sql_ms} | {r.median:.1f} | "
            f"{r.percentile(95):.1f} | {r.percentile(99):.1f} | {r.rps:.1f} | {r.n} |"
        )
    out += ["", *verdict(results, partial=args.only is not None).lines]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _pages(text: str) -> tuple[int, ...]:
    try:
        pages = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated page numbers, got {text!r}") from None
    if not pages or pages[0] < 2:
        raise argparse.ArgumentTypeError("deep pages are page numbers >= 2")
    return pages


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/catalog.py",
        description="End-to-end HTTP benchmark of shopql's catalog reads.",
    )
    parser.add_argument(
        "--database-url",
        help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB "
        "(default: SQLite under the temp directory)",
    )
    parser.add_argument("--products", type=_positive, default=100_000)
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated catalog")
    parser.add_argument("--requests", type=_positive, default=200, help="timed, per operation")
    parser.add_argument("--warmup", type=int, default=20, help="untimed, per operation")
    parser.add_argument("--concurrency", type=_positive, default=1)
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="time bound per operation's phase"
    )
    parser.add_argument("--deep-pages", type=_pages, default=DEFAULT_DEEP_PAGES, help="e.g. 50,400")
    parser.add_argument(
        "--search",
        action="append",
        dest="searches",
        help=f"search text to time (repeatable; default: {', '.join(DEFAULT_SEARCHES)})",
    )
    parser.add_argument(
        "--reset", action="store_true", help="rebuild the database even if it can be reused"
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="skip VACUUM ANALYZE after seeding PostgreSQL",
    )
    parser.add_argument(
        "--only",
        type=re.compile,
        metavar="REGEX",
        help="time only the operations whose name matches (e.g. 'search|page 1$')",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.database_url and not args.database_url.startswith(
        ("sqlite+aiosqlite://", "postgresql+asyncpg://")
    ):
        parser.error("--database-url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    args.searches = tuple(args.searches or DEFAULT_SEARCHES)
    return args


async def run_benchmark(base_url: str, args: argparse.Namespace) -> list[Result]:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30.0, limits=limits, trust_env=False
    ) as client:
        only: re.Pattern[str] | None = args.only
        ops = await build_operations(
            client,
            deep_pages=args.deep_pages,
            searches=args.searches,
            selected=lambda name: only is None or only.search(name) is not None,
        )
        if not ops:
            raise BenchError("--only matches no operation")
        # One warm-up round over every operation first, so the first one measured does not
        # pay for the server's cold caches (compiled SQL, parsed GraphQL, database pages).
        print(f"Warm-up: {args.warmup} requests per operation...", file=sys.stderr)
        for op in ops:
            await warm_up(client, op, args.warmup, max_seconds=args.max_seconds)
        results = []
        for op in ops:
            print(f"Measuring {op.name}...", file=sys.stderr)
            result = await measure(
                client,
                op,
                warmup=args.warmup,
                requests=args.requests,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
            )
            print(
                f"  median {result.median:.1f} ms, p95 {result.percentile(95):.1f} ms, "
                f"{result.sql_label} SQL statements",
                file=sys.stderr,
            )
            results.append(result)
        return results


def _terminated(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the server subprocess is always stopped.
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)
    started = datetime.now(UTC)
    url = args.database_url or default_sqlite_url(args.products, args.seed)
    try:
        prepared = asyncio.run(
            prepare_database(
                url,
                products=args.products,
                seed=args.seed,
                reset=args.reset,
                may_rebuild=args.reset or args.database_url is None,
                analyze=args.analyze,
            )
        )
        with tempfile.TemporaryDirectory(prefix="shopql-bench-") as tmp:
            log_path = Path(tmp) / "server.log"
            try:
                with running_server(
                    url, log_path=log_path, startup_timeout=args.startup_timeout
                ) as base:
                    results = asyncio.run(run_benchmark(base, args))
            except (BenchError, httpx.HTTPError):
                print(f"--- server log (tail) ---\n{_tail(log_path)}", file=sys.stderr)
                raise
    except (BenchError, httpx.HTTPError, OSError, sa.exc.SQLAlchemyError) as exc:
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 2
    report = render(results, prepared, args, started)
    sys.stdout.write(report)
    if args.output:
        args.output.write_text(report)
    return 0 if verdict(results).met else 1


if __name__ == "__main__":
    raise SystemExit(main())
