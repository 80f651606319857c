"""What metrics and the access log cost on the product listing: two real `shopql serve`
processes on one catalog, one with operations features off and one with them on, timed
interleaved.

    .venv/bin/python bench/ops_overhead.py [--products 2000] [--requests 500] [--warmup 50]
                                           [--database-url URL] [--tracing]

- baseline: `SHOPQL_METRICS=0 SHOPQL_ACCESS_LOG=0`
- ops: `SHOPQL_METRICS=1` (+ token) and the JSON access log (one line per request, written
  to a file as a log shipper would read it); with `--tracing`, also OpenTelemetry spans to
  an OTLP endpoint nobody listens on (spans are batched and dropped: the cost measured is
  making them).

Both servers run one uvicorn worker, debug off, on the same seeded SQLite file (or
`--database-url`). Requests alternate between the two servers (A B, B A, ...), one at a
time, so machine noise hits both alike. Prints the median / p95 latency of each and the
ratio ops / baseline of the medians; exit status 1 when it exceeds `--limit` (1.05).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

SHOPQL = str(Path(sys.executable).parent / "shopql")
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
TOKEN = "bench-metrics-token-0123456789"
QUERY = """query Listing { products(first: 24) { edges { node { id name slug
  priceRange { start { amount currency } } images { url alt } category { name } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "OTEL_"))}
    env.update(DATABASE_URL=database_url, SECRET_KEY=SECRET)
    return env


@contextlib.contextmanager
def server(name: str, env: dict[str, str], workdir: Path) -> Iterator[str]:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [SHOPQL, "serve", "--no-demo", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{name} server exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} server did not start")
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(client: httpx.Client) -> float:
    started = time.perf_counter()
    response = client.post("/graphql", json={"query": QUERY, "operationName": "Listing"})
    elapsed = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200 or "errors" in body:
        raise SystemExit(f"bad response: {response.status_code} {response.text[:300]}")
    if len(body["data"]["products"]["edges"]) != 24:
        raise SystemExit("expected 24 products")
    return elapsed * 1000


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--tracing", action="store_true", help="also trace (OTLP, dropped)")
    parser.add_argument("--limit", type=float, default=1.05)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shopql-ops-bench-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
        seeded = subprocess.run(
            [SHOPQL, "seed", "--products", str(args.products)],
            env=base_env(url),
            capture_output=True,
            text=True,
            check=False,
        )
        if seeded.returncode not in (0, 1):  # 1: the catalog is there already
            raise SystemExit(seeded.stderr)
        baseline_env = {**base_env(url), "SHOPQL_METRICS": "0", "SHOPQL_ACCESS_LOG": "0"}
        ops_env = {
            **base_env(url),
            "SHOPQL_METRICS": "1",
            "SHOPQL_METRICS_TOKEN": TOKEN,
            "SHOPQL_ACCESS_LOG": "1",
            "SHOPQL_LOG_FORMAT": "json",
        }
        if args.tracing:
            ops_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
        with (
            server("baseline", baseline_env, workdir) as base_url,
            server("ops", ops_env, workdir) as ops_url,
            httpx.Client(base_url=base_url, timeout=30) as baseline,
            httpx.Client(base_url=ops_url, timeout=30) as ops,
        ):
            for _ in range(args.warmup):
                timed(baseline)
                timed(ops)
            times: dict[str, list[float]] = {"baseline": [], "ops": []}
            for i in range(args.requests):
                order = [("baseline", baseline), ("ops", ops)]
                if i % 2:
                    order.reverse()
                for name, client in order:
                    times[name].append(timed(client))
            scrape = ops.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
            assert "shopql_graphql_requests_total" in scrape.text
        access_lines = (workdir / "ops.log").read_text().count('"logger":"shopql.access"')

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["ops"] / medians["baseline"]
    features = "metrics + JSON access log" + (" + tracing" if args.tracing else "")
    print(f"product listing, {args.products} products, {args.requests} requests each")
    print("| server | median ms | p95 ms |")
    print("|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.2f} | {p95(values):.2f} |")
    print(f"ops ({features}) / baseline median ratio: {ratio:.3f}")
    print(f"access lines written by the ops server: {access_lines}")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
