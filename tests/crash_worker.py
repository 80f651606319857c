"""Checkout helpers shared by the concurrency and crash tests, and the crash worker.

As a script (run with `sys.executable` by tests/test_checkout_crash.py) it performs ONE
checkoutComplete in-process (the app built with `create_app`, called through httpx's
ASGI transport), printing `ready` before the call and `done <response json>` after it.
On the way it prints a marker line at every step of the completion, seen from its SQL
statements and from wrappers around the dummy gateway and `settle` (patched in this
process only), so the test knows where its SIGKILL landed:

    s1:stock_taken s1:payment_insert s1:attempt_insert        (step 1, uncommitted)
    s2:charge_start s2:ledger_insert s2:charge_done            (step 2: the gateway)
    s3:order_insert s3:attempt_update s3:payment_update ...    (step 3, uncommitted)
    s3:stock_returned (a decline gives the stock back)         (step 3, uncommitted)
    s3:settled                                                 (step 3 committed)

`pause_at` makes the worker stop right after printing that marker, so the kill lands
exactly there; `jitter_ms` sleeps a random 0..N ms at every marker instead, to widen the
windows for randomly timed kills.

`--serve` turns the script into a fork server, so the app's imports (a second or two) are
paid once and not per trial: every `run` command forks a fresh child that does the above
and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import select
import signal
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # when run as a script from tests/
    sys.path.insert(0, str(ROOT))

from models.catalog.tables import products, variants  # noqa: E402
from models.db import Database  # noqa: E402
from resolvers import ids  # noqa: E402

WORKER_SECRET = "crash-worker-secret-key-that-is-long-enough-0123"

CREATE = """
mutation($lines: [CheckoutLineInput!]!, $email: String) {
  checkoutCreate(input: {lines: $lines, email: $email}) {
    checkout { id } errors { field code message }
  }
}"""
ADDRESS = """
mutation($id: ID!) {
  checkoutShippingAddressUpdate(checkoutId: $id, address: {
    firstName: "Ada", lastName: "Lovelace", streetAddress1: "1 Main St",
    city: "Springfield", postalCode: "12345", countryCode: "US"}) {
    checkout { id } errors { field code message }
  }
}"""
METHOD = """
mutation($id: ID!, $method: ID!) {
  checkoutShippingMethodUpdate(checkoutId: $id, shippingMethodId: $method) {
    checkout { id } errors { field code message }
  }
}"""
PROMO = """
mutation($id: ID!, $code: String!) {
  checkoutPromoCodeApply(checkoutId: $id, promoCode: $code) {
    checkout { id } errors { field code message }
  }
}"""
METHODS = "{ shippingMethods { id name } }"
COMPLETE = """
mutation($id: ID!, $token: String!, $key: String!) {
  checkoutComplete(checkoutId: $id, payment: {gateway: "dummy", token: $token},
                   idempotencyKey: $key) {
    order { id number } errors { field code message }
  }
}"""


# --------------------------------------------------------------------------- helpers


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """POST a GraphQL operation; the HTTP status is part of the answer (`_status`)."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {"_text": response.text[:500]}
    body["_status"] = response.status_code
    return body


async def _mutate(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    body = await post(client, query, variables)
    assert body["_status"] == 200 and "errors" not in body, body
    (payload,) = body["data"].values()
    assert payload["errors"] == [], payload
    return payload


async def standard_method(client: httpx.AsyncClient) -> str:
    body = await post(client, METHODS, {})
    assert "errors" not in body, body
    return next(m["id"] for m in body["data"]["shippingMethods"] if m["name"] == "Standard")


async def make_checkout(
    client: httpx.AsyncClient,
    lines: Mapping[int, int],
    method_gid: str,
    email: str,
    promo: str | None = None,
) -> str:
    """A guest checkout ready to complete: lines (variant id -> quantity), US address,
    the Standard shipping method, optionally a promo code. Returns its global ID."""
    created = await _mutate(
        client,
        CREATE,
        {
            "lines": [{"variantId": variant_gid(v), "quantity": qty} for v, qty in lines.items()],
            "email": email,
        },
    )
    gid: str = created["checkout"]["id"]
    await _mutate(client, ADDRESS, {"id": gid})
    await _mutate(client, METHOD, {"id": gid, "method": method_gid})
    if promo is not None:
        await _mutate(client, PROMO, {"id": gid, "code": promo})
    return gid


async def complete(
    client: httpx.AsyncClient, gid: str, key: str, token: str = "tok_visa"
) -> dict[str, Any]:
    return await post(client, COMPLETE, {"id": gid, "token": token, "key": key})


def variant_gid(variant_id: int) -> str:
    return ids.encode("ProductVariant", variant_id)


def checkout_token(gid: str) -> str:
    return str(ids.decode_token(gid, "Checkout"))


async def pick_variants(db: Database, count: int, *, skip: int = 0) -> list[int]:
    """Distinct variants of published products (their stock is for the caller to set)."""
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(variants.c.id)
            .join(products, products.c.id == variants.c.product_id)
            .where(products.c.is_published.is_(True), variants.c.price_amount > 0)
            .order_by(variants.c.id)
            .offset(skip)
            .limit(count)
        )
        found = [int(row[0]) for row in rows]
    assert len(found) == count, "the seeded catalog has too few published variants"
    return found


async def set_stock(db: Database, stock: Mapping[int, int]) -> None:
    async with db.transaction() as conn:
        for variant_id, quantity in stock.items():
            await conn.execute(
                variants.update().where(variants.c.id == variant_id).values(quantity=quantity)
            )


async def stock_of(db: Database, variant_ids: Iterable[int]) -> dict[int, int]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(variants.c.id, variants.c.quantity).where(
                variants.c.id.in_(list(variant_ids))
            )
        )
        return {int(r[0]): int(r[1]) for r in rows}


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.read() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.read() as conn:
        return list((await conn.execute(sa.text(sql), params)).all())


async def global_problems(db: Database) -> list[str]:
    """Cross-table invariants that must hold whatever happened (crashes, races)."""
    checks = {
        "order without a PAID payment linked to it": """
            SELECT o.id FROM orders o WHERE NOT EXISTS (
              SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.status = 'PAID')""",
        "succeeded charge without an order": """
            SELECT c.idempotency_key FROM dummy_gateway_charges c
            WHERE c.outcome = 'succeeded' AND NOT EXISTS (
              SELECT 1 FROM payments p WHERE p.idempotency_key = c.idempotency_key
                AND p.status = 'PAID' AND p.order_id IS NOT NULL)""",
        "PAID payment without a succeeded charge": """
            SELECT p.id FROM payments p WHERE p.status = 'PAID' AND NOT EXISTS (
              SELECT 1 FROM dummy_gateway_charges c
              WHERE c.idempotency_key = p.idempotency_key AND c.outcome = 'succeeded')""",
        "more than one order for a checkout": """
            SELECT checkout_id FROM orders WHERE checkout_id IS NOT NULL
            GROUP BY checkout_id HAVING COUNT(*) > 1""",
        "completed attempt without its order": """
            SELECT a.idempotency_key FROM checkout_attempts a WHERE a.state = 'COMPLETED'
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = a.order_id)""",
        "completed checkout without an order": """
            SELECT c.id FROM checkouts c WHERE c.status = 'COMPLETED'
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.checkout_id = c.id)""",
    }
    problems = []
    for name, sql in checks.items():
        found = await rows(db, sql)
        if found:
            problems.append(f"{name}: {[tuple(r) for r in found][:5]}")
    return problems


# --------------------------------------------------------------------------- the worker


def _statement(verb: str, table: str) -> re.Pattern[str]:
    into = r"INSERT\s+(?:OR\s+\w+\s+)?INTO" if verb == "INSERT" else verb
    return re.compile(rf"\s*{into}\s+\"?{table}\b", re.I)


_SQL_MARKERS = (
    (_statement("UPDATE", "product_variants"), "stock"),
    (_statement("INSERT", "payments"), "payment_insert"),
    (_statement("INSERT", "checkout_attempts"), "attempt_insert"),
    (_statement("INSERT", "dummy_gateway_charges"), "ledger_insert"),
    (_statement("INSERT", "orders"), "order_insert"),
    (_statement("UPDATE", "checkout_attempts"), "attempt_update"),
    (_statement("UPDATE", "payments"), "payment_update"),
)


def _say(line: str) -> None:
    """One line on stdout in one write(2), so lines of concurrent workers never mix."""
    os.write(1, (line + "\n").encode())


class _Markers:
    def __init__(self, prefix: str, pause_at: str | None, jitter_ms: float, seed: int) -> None:
        self.prefix = prefix
        self.phase = "s1"
        self.pause_at = pause_at
        self.jitter = jitter_ms / 1000
        self.rng = random.Random(seed)

    def emit(self, event: str) -> None:
        if event == "stock":
            event = "stock_taken" if self.phase == "s1" else "stock_returned"
        marker = f"{self.phase}:{event}"
        _say(f"{self.prefix}{marker}")
        if marker == self.pause_at:
            time.sleep(60)  # the test kills us here
            _say(f"{self.prefix}not killed")
            os._exit(3)
        if self.jitter:
            time.sleep(self.rng.uniform(0, self.jitter))

    def after_sql(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        for pattern, event in _SQL_MARKERS:
            if pattern.match(statement):
                self.emit(event)
                return


def _install(markers: _Markers) -> None:
    """Wrap the gateway and step 3 (in this process only) so they report where they are."""
    from models.payments.gateways import DummyGateway
    from resolvers import checkout as checkout_package

    # `settle` as `resume` calls it: a global of the module that defines `resume`.
    module = sys.modules[checkout_package.resume.__module__]
    charge = DummyGateway.charge
    settle = module.settle

    async def traced_charge(self: DummyGateway, **kwargs: Any) -> Any:
        markers.phase = "s2"
        markers.emit("charge_start")
        result = await charge(self, **kwargs)
        markers.emit("charge_done")
        markers.phase = "s3"
        return result

    async def traced_settle(*args: Any, **kwargs: Any) -> None:
        markers.phase = "s3"
        await settle(*args, **kwargs)
        markers.emit("settled")

    DummyGateway.charge = traced_charge  # type: ignore[method-assign]
    module.settle = traced_settle


async def _complete_once(app: Any, job: dict[str, Any]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker.test") as client:
        try:
            return await complete(client, job["checkout"], job["key"], job["token"])
        finally:
            await app.state.db.dispose()


def run_one(job: dict[str, Any], prefix: str = "") -> None:
    """Build the app, say `ready`, complete the checkout once, say `done <response>`."""
    from sqlalchemy import event

    from app import create_app
    from models.settings import Settings

    markers = _Markers(prefix, job.get("pause_at"), job.get("jitter_ms", 0), job.get("seed", 0))
    _install(markers)
    app = create_app(
        Settings(database_url=job["database_url"], debug=True, secret_key=WORKER_SECRET)
    )
    event.listen(app.state.db.engine.sync_engine, "after_cursor_execute", markers.after_sql)
    _say(f"{prefix}ready")
    body = asyncio.run(_complete_once(app, job))
    _say(f"{prefix}done " + json.dumps(body))


def serve() -> None:
    """Fork server: modules are imported once; each `run <id> <json>` line on stdin forks
    a child that runs ONE completion (`<id> ...` lines on stdout) and exits; `kill <id>`
    SIGKILLs that child if it is still running; `<id> exit <code>` reports its end. EOF on
    stdin kills and reaps whatever is left."""
    import app  # noqa: F401  (the expensive imports, done once before any fork)
    import models.settings  # noqa: F401

    children: dict[int, str] = {}
    _say("ready")
    pending = b""
    stdin_open = True
    while stdin_open or children:
        if stdin_open and select.select([0], [], [], 0.002)[0]:
            chunk = os.read(0, 65536)
            stdin_open = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                command, trial_id, rest = [*raw.decode().split(" ", 2), "", ""][:3]
                if command == "run":
                    pid = os.fork()
                    if pid == 0:
                        _child(trial_id, json.loads(rest))
                    children[pid] = trial_id
                elif command == "kill":
                    for pid, owner in children.items():
                        if owner == trial_id:  # not reaped yet, so the pid is still ours
                            os.kill(pid, signal.SIGKILL)
        if not stdin_open:
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            owner = children.pop(pid, None)
            if owner is not None:
                _say(f"{owner} exit {os.waitstatus_to_exitcode(status)}")


def _child(trial_id: str, job: dict[str, Any]) -> None:
    code = 0
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        run_one(job, prefix=f"{trial_id} ")
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="fork server (see serve())")
    parser.add_argument("--database-url")
    parser.add_argument("--checkout")
    parser.add_argument("--key")
    parser.add_argument("--token", default="tok_visa")
    parser.add_argument("--pause-at", default=None)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if not (args.database_url and args.checkout and args.key):
        parser.error("--database-url, --checkout and --key are required without --serve")
    run_one(
        {
            "database_url": args.database_url,
            "checkout": args.checkout,
            "key": args.key,
            "token": args.token,
            "pause_at": args.pause_at,
            "jitter_ms": args.jitter_ms,
            "seed": args.seed,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
