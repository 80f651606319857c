"""Crash safety of checkoutComplete: real worker processes (tests/crash_worker.py) are
SIGKILLed before, during and after each of its three steps; then the same call is retried
with the same key (or, when the client never comes back, `recover_stale` settles it), and
the books must balance: one order, one charge, stock taken once, or none of it.

Two kinds of kills:

* pinned: the worker stops right after printing a chosen marker (inside an open
  transaction, or between two steps) and is killed there, so every window is covered on
  every run (these run a few at a time, each on its own checkout of its own variant);
* timed: the worker is killed a random 20-120% of an undisturbed completion's duration
  (measured first, on this machine: about 80-150 ms) after it starts the request,
  sleeping a random few ms at every marker; the last marker it printed tells where the
  kill landed. These run one at a time so that the timing holds.

CRASH_SEED=<seed> replays a run's random choices (the seed is printed).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_client
from crash_worker import (
    checkout_token,
    complete,
    global_problems,
    make_checkout,
    pick_variants,
    rows,
    scalar,
    set_stock,
    standard_method,
    stock_of,
)

from models.db import Database
from models.payments.gateways import DummyGateway
from resolvers.checkout import recover_stale

WORKER = Path(__file__).with_name("crash_worker.py")
ROOT = WORKER.parent.parent
STOCK = 7
QUANTITY = 2
PARALLEL = 4
READY_TIMEOUT = 60.0

PINNED_PAID = [
    "s1:stock_taken",  # step 1 open: stock taken, nothing else yet
    "s1:attempt_insert",  # step 1 open: everything written, not committed
    "s2:charge_start",  # step 1 committed, charge not made
    "s2:ledger_insert",  # the gateway's ledger row written, not committed
    "s2:charge_done",  # charged, step 3 not started
    "s3:order_insert",  # step 3 open: order written, not committed
    "s3:payment_update",  # step 3 open: attempt finished and payment PAID, not committed
    "s3:settled",  # step 3 committed, the response not sent
]
PINNED_DECLINED = [
    "s1:attempt_insert",
    "s2:ledger_insert",
    "s2:charge_done",
    "s3:stock_returned",
    "s3:settled",
]
RANDOM_PAID = 14
RANDOM_DECLINED = 6
RECOVERY_PINNED = [
    "s1:attempt_insert",  # nothing committed: nothing to recover
    "s2:charge_start",  # reserved, never charged: released
    "s2:ledger_insert",  # the charge rolled back with the process: released
    "s2:charge_done",  # charged, never settled: the order
    "s3:order_insert",  # charged, settle rolled back: the order
]
RECOVERY_RANDOM = 6

# Where a kill landed, from the last marker the worker printed before it died.
WINDOWS = {
    "ready": "step 1: before it started",
    "s1:stock_taken": "step 1: during (uncommitted)",
    "s1:payment_insert": "step 1: during (uncommitted)",
    "s1:attempt_insert": "step 1: during (uncommitted)",
    "s2:charge_start": "step 2: after step 1, before the charge",
    "s2:ledger_insert": "step 2: during the charge (ledger uncommitted)",
    "s2:charge_done": "step 2: after the charge, before step 3",
    "s3:order_insert": "step 3: during (uncommitted)",
    "s3:attempt_update": "step 3: during (uncommitted)",
    "s3:stock_returned": "step 3: during (uncommitted)",
    "s3:payment_update": "step 3: during (uncommitted)",
    "s3:settled": "step 3: after (committed, no response yet)",
    "done": "after the response",
}


@dataclass
class Trial:
    name: str
    token: str
    pause_at: str | None = None
    kill_at: float | None = None  # fraction of an undisturbed completion's duration
    kill_after_ms: float | None = 0.0  # None: never killed (the calibration run)
    jitter_ms: float = 0.0
    seed: int = 0
    variant: int = 0
    id: str = ""
    checkout: str = ""
    key: str = field(default_factory=lambda: f"crash-{uuid.uuid4().hex}")
    markers: list[str] = field(default_factory=list)
    stamps: dict[str, float] = field(default_factory=dict)  # marker -> when the test saw it
    exit_code: int | None = None

    @property
    def declined(self) -> bool:
        return self.token != "tok_visa"

    @property
    def window(self) -> str:
        last = self.markers[-1] if self.markers else "ready"
        return WINDOWS.get(last.split(" ", 1)[0], last)


def _trials(rng: random.Random) -> list[Trial]:
    trials = [Trial(f"pinned {m}", "tok_visa", pause_at=m) for m in PINNED_PAID]
    trials += [
        Trial(f"pinned {m} (declined)", "tok_chargeDeclined", pause_at=m) for m in PINNED_DECLINED
    ]
    for i in range(RANDOM_PAID + RANDOM_DECLINED):
        token = "tok_visa" if i < RANDOM_PAID else "tok_chargeDeclined"
        trials.append(
            Trial(
                f"random {i}",
                token,
                kill_at=rng.uniform(0.2, 1.2),
                jitter_ms=rng.choice((0, 2, 5)),
                seed=rng.randrange(1 << 30),
            )
        )
    return trials


class ForkServer:
    """tests/crash_worker.py --serve: forks one worker process per trial on request."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: dict[str, asyncio.Queue[str | None]] = {"ready": asyncio.Queue()}
        self.reader = asyncio.create_task(self._read())
        assert proc.stderr is not None
        self.stderr_reader = asyncio.create_task(proc.stderr.read())  # drained all along
        self.stderr = ""

    @classmethod
    async def start(cls) -> ForkServer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "--serve",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        server = cls(proc)
        await server.ready()
        return server

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            owner, _, rest = raw.decode().rstrip("\n").partition(" ")
            self.lines.setdefault(owner, asyncio.Queue()).put_nowait(rest)
        for queue in self.lines.values():
            queue.put_nowait(None)  # the server is gone

    async def ready(self) -> None:
        await asyncio.wait_for(self.lines["ready"].get(), READY_TIMEOUT)

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def next_line(self, trial: Trial) -> str:
        line = await asyncio.wait_for(self.lines[trial.id].get(), READY_TIMEOUT)
        assert line is not None, f"{trial.name}: the fork server died\n{self.stderr}"
        if line.startswith("exit "):
            trial.exit_code = int(line.split()[1])
        else:
            trial.markers.append(line)
            trial.stamps.setdefault(line.split(" ", 1)[0], time.monotonic())
        return line

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: the server kills and reaps what is left, then exits
        try:
            self.stderr = (await asyncio.wait_for(self.stderr_reader, 30)).decode()
            await asyncio.wait_for(self.reader, 30)
            await asyncio.wait_for(self.proc.wait(), 30)
        finally:
            if self.proc.returncode is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


async def _run_worker(server: ForkServer, trial: Trial, url: str, rng: random.Random) -> None:
    """Fork a worker, let it get going, SIGKILL it, keep what it printed."""
    trial.id = uuid.uuid4().hex[:12]
    server.lines[trial.id] = asyncio.Queue()
    job = {
        "database_url": url,
        "checkout": trial.checkout,
        "key": trial.key,
        "token": trial.token,
        "pause_at": trial.pause_at,
        "jitter_ms": trial.jitter_ms,
        "seed": trial.seed,
    }
    await server.send(f"run {trial.id} {json.dumps(job)}")
    try:
        while await server.next_line(trial) != "ready":
            pass
        trial.markers.clear()
        if trial.pause_at:
            while await server.next_line(trial) != trial.pause_at:
                assert trial.exit_code is None, f"{trial.name}: not paused: {trial.markers}"
            await asyncio.sleep(rng.uniform(0, 0.005))
        elif trial.kill_after_ms is not None:
            await asyncio.sleep(trial.kill_after_ms / 1000)
        else:
            while trial.exit_code is None:
                await server.next_line(trial)
    finally:
        await server.send(f"kill {trial.id}")
        while trial.exit_code is None:
            await server.next_line(trial)


async def _state(db: Database, trial: Trial) -> dict[str, Any]:
    checkout_id = await scalar(
        db, "SELECT id FROM checkouts WHERE token = :t", t=checkout_token(trial.checkout)
    )
    orders = await rows(db, "SELECT id, number FROM orders WHERE checkout_id = :c", c=checkout_id)
    return {
        "orders": [tuple(o) for o in orders],
        "charges": await scalar(
            db,
            "SELECT COUNT(*) FROM dummy_gateway_charges WHERE idempotency_key = :k "
            "AND outcome = 'succeeded'",
            k=trial.key,
        ),
        "payments": [
            tuple(p)
            for p in await rows(
                db, "SELECT status, order_id FROM payments WHERE checkout_id = :c", c=checkout_id
            )
        ],
        "attempts": [
            tuple(a)
            for a in await rows(
                db,
                "SELECT idempotency_key, state, order_id FROM checkout_attempts "
                "WHERE checkout_id = :c",
                c=checkout_id,
            )
        ],
        "status": await scalar(db, "SELECT status FROM checkouts WHERE id = :c", c=checkout_id),
        "stock": (await stock_of(db, [trial.variant]))[trial.variant],
    }


async def _check(trial: Trial, db: Database, outcome: str, response: Any = None) -> None:
    """The books for one trial: `paid` (one order, one charge, stock taken once),
    `released` (no order, no charge, stock back, checkout open, the attempt FAILED) or
    `untouched` (killed before step 1 committed and nobody came back: nothing happened)."""
    state = await _state(db, trial)
    what = f"{trial.name} (killed at {trial.window}): {state} {response}"
    if outcome == "paid":
        assert len(state["orders"]) == 1, what
        order_id, number = state["orders"][0]
        assert state["charges"] == 1 and state["status"] == "COMPLETED", what
        assert state["stock"] == STOCK - QUANTITY, what
        assert state["payments"] == [("PAID", order_id)], what
        assert state["attempts"] == [(trial.key, "COMPLETED", order_id)], what
        if response is not None:
            assert response["_status"] == 200 and "errors" not in response, what
            payload = response["data"]["checkoutComplete"]
            assert payload["errors"] == [] and payload["order"]["number"] == number, what
        return
    assert (state["orders"], state["charges"], state["status"]) == ([], 0, "OPEN"), what
    assert state["stock"] == STOCK, what
    if outcome == "released":
        assert state["payments"] == [("FAILED", None)], what
        assert state["attempts"] == [(trial.key, "FAILED", None)], what
    else:
        assert (state["payments"], state["attempts"]) == ([], []), what
    if response is not None:
        assert response["_status"] == 200 and "errors" not in response, what
        payload = response["data"]["checkoutComplete"]
        assert payload["order"] is None, what
        assert [e["code"] for e in payload["errors"]] == ["PAYMENT_DECLINED"], what


@dataclass
class CrashLab:
    db: Database
    client: httpx.AsyncClient
    url: str
    server: ForkServer
    rng: random.Random

    async def prepare(self, trials: list[Trial]) -> None:
        """A checkout of its own variant (stock STOCK) for every trial."""
        variant_ids = await pick_variants(self.db, len(trials))
        await set_stock(self.db, dict.fromkeys(variant_ids, STOCK))
        method = await standard_method(self.client)
        for trial, variant in zip(trials, variant_ids, strict=True):
            trial.variant = variant
            trial.checkout = await make_checkout(
                self.client, {variant: QUANTITY}, method, f"crash-{variant}@example.com"
            )

    async def kill(self, trial: Trial) -> None:
        await _run_worker(self.server, trial, self.url, self.rng)
        finished = trial.exit_code == 0 and trial.markers[-1].startswith("done ")
        assert trial.exit_code == -signal.SIGKILL or finished, (
            f"{trial.name}: exit {trial.exit_code} after {trial.markers}"
        )
        if trial.pause_at:
            assert trial.exit_code == -signal.SIGKILL and trial.markers[-1] == trial.pause_at

    async def retry(self, trial: Trial) -> dict[str, Any]:
        return await complete(self.client, trial.checkout, trial.key, trial.token)

    async def balanced(self) -> None:
        """Nothing left half-done anywhere in the database."""
        assert await global_problems(self.db) == []
        assert (
            await scalar(
                self.db,
                "SELECT COUNT(*) FROM checkout_attempts WHERE state NOT IN ('COMPLETED', 'FAILED')",
            )
            == 0
        )
        assert (
            await scalar(self.db, "SELECT COUNT(*) FROM checkouts WHERE status = 'COMPLETING'") == 0
        )


@pytest.fixture
async def lab(fresh_url: str) -> AsyncIterator[CrashLab]:
    db = Database(fresh_url)
    server = await ForkServer.start()
    try:
        async with make_client(db) as client:
            seed = os.environ.get("CRASH_SEED") or uuid.uuid4().hex
            print(f"\nCRASH_SEED={seed}")
            yield CrashLab(db, client, fresh_url, server, random.Random(seed))
    finally:
        await server.close()
        await db.dispose()
    assert "Traceback" not in server.stderr, server.stderr[-3000:]


def _report(title: str, trials: list[Trial]) -> None:
    stats = Counter(
        ("pinned" if t.pause_at else "random", t.window, "declined" if t.declined else "paid")
        for t in trials
    )
    print(title)
    for (how, window, kind), count in sorted(stats.items()):
        print(f"  {count:3d}  {how} {kind:8s} {window}")


async def test_sigkill_anywhere_in_checkout_complete_then_retry_balances_the_books(
    lab: CrashLab,
) -> None:
    # An undisturbed completion first (itself a trial: retried after it answered): its
    # duration spreads the random kills over the whole request, however fast this machine.
    calibration = Trial("calibration", "tok_visa", kill_after_ms=None)
    trials = [calibration, *_trials(lab.rng)]
    await lab.prepare(trials)
    gate = asyncio.Semaphore(PARALLEL)

    async def run(trial: Trial) -> None:
        async with gate:
            await lab.kill(trial)
        retry = await lab.retry(trial)
        await _check(trial, lab.db, "released" if trial.declined else "paid", retry)
        # Another retry changes nothing and answers the same.
        again = await lab.retry(trial)
        assert again["data"] == retry["data"], trial.name
        await _check(trial, lab.db, "released" if trial.declined else "paid", again)

    await run(calibration)
    span_ms = (calibration.stamps["done"] - calibration.stamps["ready"]) * 1000
    # Pinned kills need no timing: a few at a time. Timed kills one by one, so that each
    # request runs as fast as the calibration did.
    await asyncio.gather(*(run(t) for t in trials if t.pause_at))
    for trial in trials:
        if trial.kill_at is not None:
            trial.kill_after_ms = trial.kill_at * span_ms
            await run(trial)
    await lab.balanced()

    killed = trials[1:]
    assert len(killed) >= 20
    _report(
        f"{len(killed)} killed-then-retried trials on {lab.db.dialect} "
        f"(an undisturbed completion took {span_ms:.0f} ms):",
        killed,
    )


async def test_sigkill_then_the_client_never_returns_and_recovery_settles_it(
    lab: CrashLab,
) -> None:
    """`shopql recover-checkouts` (resolvers.checkout.recover_stale) after a SIGKILL: the
    charge the gateway holds becomes the order, anything else is released; a client that
    comes back late with the same key then changes nothing."""
    calibration = Trial("calibration", "tok_visa", kill_after_ms=None)
    trials = [calibration]
    trials += [Trial(f"pinned {m}", "tok_visa", pause_at=m) for m in RECOVERY_PINNED]
    trials += [
        Trial(
            f"random {i}",
            "tok_visa" if i % 3 else "tok_chargeDeclined",
            kill_at=lab.rng.uniform(0.2, 1.2),
            seed=lab.rng.randrange(1 << 30),
        )
        for i in range(RECOVERY_RANDOM)
    ]
    await lab.prepare(trials)
    await lab.kill(calibration)
    span_ms = (calibration.stamps["done"] - calibration.stamps["ready"]) * 1000
    gateways = {"dummy": DummyGateway(lab.db)}
    outcomes: Counter[str] = Counter()
    # One at a time: recovery sweeps every stale attempt, and "stale" here is "any age".
    for trial in trials[1:]:
        if trial.kill_at is not None:
            trial.kill_after_ms = trial.kill_at * span_ms
        await lab.kill(trial)
        before = await _state(lab.db, trial)
        await recover_stale(lab.db, gateways, older_than=timedelta(0))
        outcome = "paid" if before["charges"] else "released" if before["attempts"] else "untouched"
        await _check(trial, lab.db, outcome)
        outcomes[outcome] += 1
        # The client comes back late with the same key: no second charge, no second order.
        late = await lab.retry(trial)
        if outcome == "untouched":  # nothing was recorded: the late call is a first call
            outcome = "released" if trial.declined else "paid"
        await _check(trial, lab.db, outcome, late)
    await lab.balanced()
    _report(
        f"{len(trials) - 1} killed-then-recovered trials on {lab.db.dialect} "
        f"(outcomes {dict(outcomes)}):",
        trials[1:],
    )


async def test_recovery_racing_a_late_retry_never_leaves_a_charge_without_an_order(
    lab: CrashLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = Trial("recovery race", "tok_visa", pause_at="s2:charge_start")
    await lab.prepare([trial])
    await lab.kill(trial)  # step 1 committed, no charge: the attempt is RESERVED

    in_charge = asyncio.Event()
    go_on = asyncio.Event()
    charge = DummyGateway.charge

    async def slow_charge(self: DummyGateway, **kwargs: Any) -> Any:
        in_charge.set()
        await go_on.wait()  # the retry's request to the PSP is under way
        return await charge(self, **kwargs)

    monkeypatch.setattr(DummyGateway, "charge", slow_charge)
    retry = asyncio.create_task(lab.retry(trial))
    await asyncio.wait_for(in_charge.wait(), 10)
    monkeypatch.setattr(DummyGateway, "charge", charge)  # the recovery's own lookups
    await recover_stale(lab.db, {"dummy": DummyGateway(lab.db)}, older_than=timedelta(0))
    go_on.set()
    response = await retry

    state = await _state(lab.db, trial)
    # Whatever the outcome, money and orders agree: charged and ordered, or neither.
    assert state["charges"] == len(state["orders"]), (state, response)
    assert await global_problems(lab.db) == []
