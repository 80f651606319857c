"""What an abuse flood costs everybody else: 200 concurrent clients sending documents the
limits refuse (1,000 aliases, or 50 levels deep) at a real `shopql serve`, while a probe
measures the median latency of a normal storefront query (`products(first: 24)`).

    .venv/bin/python bench/abuse.py [--products 500] [--attackers 200]
                                    [--attack aliases|depth] [--duration 10]
                                    [--database-url URL] [--limit 2.0]

1. Starts `shopql serve` (one uvicorn worker, debug off, access log off, rate limiting
   off: the probe alone would exceed the default limit, and refused documents never cost
   points anyway) on a fresh SQLite file seeded with `--products` demo products, or on
   `--database-url`.
2. Baseline: the probe sends the listing one request at a time for `--duration` seconds.
3. Attack: a second process runs `--attackers` concurrent clients, each sending the
   refused document in a loop (after checking the server refuses it with the expected
   code); the probe measures again for `--duration` seconds.
4. Prints the medians, p95s, the ratio attack / baseline of the medians and the attack's
   refusals per second; exit status 1 when the ratio exceeds `--limit` (2.0).

The probe, the attackers and the server share the machine (on a 2-core box the attack
process takes one core): run it on a quiet machine, by hand, not in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

SHOPQL = str(Path(sys.executable).parent / "shopql")
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
LISTING = """query Listing { products(first: 24) { nodes { id name slug
  priceRange { start { amount currency } } images { url alt } } } }"""
ATTACKS: dict[str, tuple[str, str | None]] = {
    # 1,000 aliased fields: refused by the token limit (3 tokens each, 2,000 allowed).
    "aliases": (
        "query Aliases { " + " ".join(f"a{i}: __typename" for i in range(1000)) + " }",
        "TOO_MANY_TOKENS",
    ),
    # The floor: the cheapest document there is, answered (not refused). No refusal can
    # cost the server less than this request does.
    "trivial": ("{ __typename }", None),
    # 50 levels of nesting: refused by the depth limit (10).
    "depth": (
        "query Deep { " + 'category(slug: "x") { parent { ' * 25 + "id" + " }" * 50 + " }",
        "QUERY_TOO_DEEP",
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPQL_", "DATABASE_"))}
    env.update(
        DATABASE_URL=args.database_url or f"sqlite+aiosqlite:///{workdir}/shop.db",
        SECRET_KEY=SECRET,
        SHOPQL_ACCESS_LOG="0",
        SHOPQL_RATE_LIMIT=str(args.rate_limit),
        # The probe stands for a storefront proxy: its X-Forwarded-For is believed (each
        # of its requests comes from one of many shoppers); the attackers' is not.
        FORWARDED_ALLOW_IPS="127.0.0.2",
        SHOPQL_WEBHOOK_WORKER="0",
        SHOPQL_LOG_LEVEL="WARNING",
    )
    log = workdir / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [SHOPQL, "serve", "--port", str(port), "--demo-products", str(args.products)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"shopql serve exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("shopql serve did not start within 300 s")
            time.sleep(0.2)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def probe(client: httpx.AsyncClient, seconds: float) -> list[float]:
    """Listing latencies (ms), one request at a time, for `seconds` (on one kept-alive
    connection, opened before the attack: a storefront's connection pool)."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shopper = f"198.51.100.{len(latencies) % 200 + 1}"
        started = time.perf_counter()
        response = await client.post(
            "/graphql", json={"query": LISTING}, headers={"x-forwarded-for": shopper}
        )
        latencies.append((time.perf_counter() - started) * 1000)
        body = response.json()
        if response.status_code != 200 or "errors" in body:
            raise SystemExit(f"probe failed: {response.status_code} {response.text[:300]}")
        if len(body["data"]["products"]["nodes"]) != 24:
            raise SystemExit("probe: the catalog has fewer than 24 products")
    return latencies


async def attack(base: str, kind: str, attackers: int, seconds: float) -> dict[str, Any]:
    """`attackers` keep-alive connections each sending the refused document in a loop
    for `seconds`, over raw sockets (an HTTP client library would spend more CPU than the
    server: the attack would measure the client)."""
    document, code = ATTACKS[kind]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        first = await client.post("/graphql", json={"query": document})
    codes = [e.get("extensions", {}).get("code") for e in first.json().get("errors", ())]
    if code is not None and code not in codes:
        raise SystemExit(f"the {kind} document was not refused with {code}: {first.text[:300]}")
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    body = json.dumps({"query": document}).encode()
    request = (
        f"POST /graphql HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    sent = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length is None or not head.startswith(b"HTTP/1.1 "):
                    raise SystemExit(f"unexpected answer: {head[:200]!r}")
                await reader.readexactly(int(length.group(1)))
                sent += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(attackers)))
    elapsed = time.monotonic() - started
    return {"requests": sent, "per_second": sent / elapsed if elapsed else 0.0}


def summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


async def run(args: argparse.Namespace, base: str) -> int:
    # From 127.0.0.2: another client address than the attackers' (127.0.0.1).
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base, timeout=120, transport=transport) as client:
        return await measure(args, base, client)


async def measure(args: argparse.Namespace, base: str, client: httpx.AsyncClient) -> int:
    await probe(client, 1.0)  # warm-up
    baseline = await probe(client, args.duration)
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--attacker",
        base,
        "--attack",
        args.attack,
        "--attackers",
        str(args.attackers),
        "--duration",
        str(args.duration + 3),
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(2.0)  # every attacker connected and sending
    under_attack = await probe(client, args.duration)
    out, _ = await attacker.communicate()
    if attacker.returncode != 0:
        raise SystemExit(f"the attack process failed (exit {attacker.returncode})")
    flood = json.loads(out)
    base_median, base_p95 = summary(baseline)
    attack_median, attack_p95 = summary(under_attack)
    ratio = attack_median / base_median
    print(f"## bench/abuse.py: {args.attackers} clients sending the {args.attack} document\n")
    print("| phase | probe requests | median ms | p95 ms |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| baseline | {len(baseline)} | {base_median:.1f} | {base_p95:.1f} |")
    print(f"| under attack | {len(under_attack)} | {attack_median:.1f} | {attack_p95:.1f} |")
    print(
        f"\nattack: {flood['requests']} refused requests, {flood['per_second']:.0f}/s; "
        f"median ratio attack / baseline: {ratio:.2f} (target <= {args.limit})"
    )
    return 0 if ratio <= args.limit else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--attackers", type=int, default=200)
    parser.add_argument("--attack", choices=sorted(ATTACKS), default="aliases")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--limit", type=float, default=2.0)
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=30_000,
        help="SHOPQL_RATE_LIMIT of the server (default: the default, 30000; 0: off)",
    )
    parser.add_argument("--attacker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        stats = asyncio.run(attack(args.attacker, args.attack, args.attackers, args.duration))
        print(json.dumps(stats))
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="shopql-abuse-") as tmp,
        serving(args, Path(tmp)) as base,
    ):
        return asyncio.run(run(args, base))


if __name__ == "__main__":
    raise SystemExit(main())
