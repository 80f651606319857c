"""Authentication costs, run by hand: `.venv/bin/python bench/auth.py [--trials N]`.

Reports, on a fresh SQLite database in a temporary folder:
- the median latency of `tokenCreate` (argon2id verify at the configured cost);
- the cost of verifying an access token (signature and claims), per call, and of a token
  verified before (remembered: only its expiry is checked);
- the end-to-end overhead an Authorization header adds to a plain query (token
  verification plus the one statement that checks the session is not revoked),
  measured as the difference of medians with and without the header, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from models.accounts.passwords import Passwords
from models.accounts.queries import create_user
from models.accounts.tokens import create_access_token, verify_access_token
from models.db import Database
from models.migrate import upgrade
from models.settings import Settings

SECRET = "bench-secret-key-that-is-long-enough-for-production-0123"
QUERY = "{ products(first: 1) { nodes { id } } }"


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.3f} ms"


async def run(trials: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="shopql-bench-auth-"))
    db = Database(f"sqlite+aiosqlite:///{folder / 'auth.db'}")
    await upgrade(db)
    password = "correct horse battery staple"
    async with db.transaction() as conn:
        await create_user(
            conn, email="bench@example.com", password_hash=await Passwords().hash(password)
        )
    settings = Settings(
        database_url=db.url, secret_key=SECRET, login_max_failures=10**6, debug=False
    )
    app = create_app(settings, db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        login = (
            "mutation($e: String!, $p: String!) { tokenCreate(email: $e, password: $p) "
            "{ accessToken errors { code } } }"
        )
        variables = {"e": "bench@example.com", "p": password}
        token = ""
        logins: list[float] = []
        for _ in range(max(10, trials // 10)):
            started = time.perf_counter()
            body = (
                await client.post("/graphql", json={"query": login, "variables": variables})
            ).json()
            logins.append(time.perf_counter() - started)
            token = body["data"]["tokenCreate"]["accessToken"]
        assert token, "sign-in failed"

        plain: list[float] = []
        authed: list[float] = []
        headers = {"authorization": f"Bearer {token}"}
        for _ in range(50):  # warm-up
            await client.post("/graphql", json={"query": QUERY})
            await client.post("/graphql", json={"query": QUERY}, headers=headers)
        for _ in range(trials):
            started = time.perf_counter()
            await client.post("/graphql", json={"query": QUERY})
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            await client.post("/graphql", json={"query": QUERY}, headers=headers)
            authed.append(time.perf_counter() - started)

    n = 20_000
    # distinct tokens (each verified for the first time), then one token over and over
    # (remembered after its first verification: only its expiry is checked)
    fresh = [
        create_access_token(secret=SECRET, user_id=1, session_id="a" * 32, ttl=900)
        for _ in range(n)
    ]
    started = time.perf_counter()
    for raw in fresh:
        verify_access_token(raw, secret=SECRET)
    verify = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for _ in range(n):
        verify_access_token(fresh[0], secret=SECRET)
    again = (time.perf_counter() - started) / n
    await db.dispose()

    overhead = statistics.median(authed) - statistics.median(plain)
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| tokenCreate median ({len(logins)} sign-ins, argon2id m=19 MiB t=2) | {_ms(logins)} |")
    print(f"| access-token verification (signature + claims), per call | {verify * 1e6:.1f} µs |")
    print(f"| the same token again (remembered; expiry only), per call | {again * 1e6:.2f} µs |")
    print(f"| plain query median, anonymous ({trials}) | {_ms(plain)} |")
    print(f"| same query with a Bearer token ({trials}) | {_ms(authed)} |")
    print(
        f"| overhead of the header (verification + session check, 1 SQL statement) "
        f"| {overhead * 1000:.3f} ms |"
    )
    verdict = "met" if verify < 0.0001 else "MISSED"
    print(f"\nToken verification under 0.1 ms per request: {verdict} ({verify * 1e6:.1f} µs).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=500)
    asyncio.run(run(parser.parse_args().trials))


if __name__ == "__main__":
    main()
