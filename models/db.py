"""Engine, connections and transactions for SQLite (embedded default) and PostgreSQL.

Reads run on autocommit connections (one per DataLoader batch, never shared between
concurrent batches). Writes run inside `Database.transaction()`, which on SQLite starts
with `BEGIN IMMEDIATE` so concurrent writers queue on the lock instead of failing to
upgrade a deferred transaction.

A request's connections live inside the request: the tasks it starts besides its own
(DataLoader batches, fields the executor stopped waiting for) are tracked in its
`RequestWork`, which the executor settles before the response is sent (`RequestWork.settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import DateTime, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from models.events import EventBus, flush_pending, take_pending

T = TypeVar("T")

if TYPE_CHECKING:
    from models.telemetry import SqlTracer

metadata = SQLModel.metadata
logger = logging.getLogger("shopql.db")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC, always returned timezone-aware.

    PostgreSQL stores `timestamptz`; SQLite stores naive UTC text that sorts correctly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def timestamp_column() -> sa.Column[datetime]:
    return sa.Column(UTCDateTime(), nullable=False)


def optional_timestamp_column() -> sa.Column[datetime]:
    return sa.Column(UTCDateTime(), nullable=True)


# Names sort by code point on both backends (PostgreSQL "C" == SQLite BINARY), so keyset
# cursors and the sort order agree everywhere.
NameType = sa.String(250).with_variant(sa.String(250, collation="C"), "postgresql")


def insert_ignoring_conflicts(table: sa.Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for either backend (rowcount says if it went in)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class SqlStats:
    """SQL statements run (and time spent) on behalf of one request; `tracer` is set when
    the request is traced (one OpenTelemetry span per statement)."""

    count: int = 0
    seconds: float = 0.0
    _started: list[float] = field(default_factory=list)
    tracer: SqlTracer | None = None


_sql_stats: contextvars.ContextVar[SqlStats | None] = contextvars.ContextVar(
    "shopql_sql_stats", default=None
)


def track_sql() -> SqlStats:
    """Start counting SQL statements for the current task and the tasks it spawns."""
    stats = SqlStats()
    _sql_stats.set(stats)
    return stats


class RequestWork:
    """The tasks one request runs besides its own: DataLoader batches, and fields the
    executor stopped waiting for when an error nulled their parent. Each may hold a pooled
    connection; `settle` makes sure none still runs once the request answers.

    Tracking costs one context-variable read per batch (`track_request_task`).
    """

    __slots__ = ("_pending",)

    # How long `settle` lets leftover work finish on its own before cancelling it, and how
    # long it then waits for the cancelled work to give its connections back.
    GRACE = 0.5
    CANCEL_TIMEOUT = 5.0

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    def track(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    @property
    def pending(self) -> int:
        """Tracked tasks (or futures) not finished yet."""
        return len(self._pending)

    def cancel(self) -> None:
        """Cancel every tracked task without waiting for it."""
        for future in list(self._pending):
            future.cancel()

    async def settle(
        self, *, grace: float | None = None, cancel_timeout: float | None = None
    ) -> None:
        """Return once every tracked task has finished: those still running after `grace`
        seconds (their results are moot: the response is complete) are cancelled, which
        closes their connections (rolling back any transaction). Never waits longer than
        `grace + cancel_timeout`: work that ignores cancellation is logged and left behind."""
        pending = self._pending
        if not pending:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.GRACE if grace is None else grace)
        while pending and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(pending), timeout=left)
        deadline = loop.time() + (self.CANCEL_TIMEOUT if cancel_timeout is None else cancel_timeout)
        cancelled: set[asyncio.Future[Any]] = set()
        while pending and (left := deadline - loop.time()) > 0:
            for future in pending - cancelled:
                future.cancel()
                cancelled.add(future)
            await asyncio.wait(list(pending), timeout=left)
        if pending:
            logger.error(
                "%d task(s) of a finished request ignored cancellation: %r",
                len(pending),
                list(pending)[:5],
            )


_request_work: contextvars.ContextVar[RequestWork | None] = contextvars.ContextVar(
    "shopql_request_work", default=None
)


def start_request_work() -> tuple[RequestWork, contextvars.Token[RequestWork | None]]:
    """A fresh `RequestWork` for the current task and the tasks it spawns; reset the
    context variable with the token when the request's execution is over."""
    work = RequestWork()
    return work, _request_work.set(work)


def end_request_work(token: contextvars.Token[RequestWork | None]) -> None:
    # finished in another context than it started in: there is nothing to undo
    with contextlib.suppress(ValueError):
        _request_work.reset(token)


def track_request_task(task: asyncio.Future[Any]) -> None:
    """Count `task` as work of the current request, if there is one."""
    work = _request_work.get()
    if work is not None:
        work.track(task)


def sql_stats() -> SqlStats | None:
    """The current request's statement counter, if it counts (`track_sql`)."""
    return _sql_stats.get()


def statement_started(stats: SqlStats, conn: Any, statement: str) -> None:
    stats.count += 1
    stats._started.append(time.perf_counter())
    if stats.tracer is not None:
        stats.tracer.start(conn, statement)


def statement_ended(stats: SqlStats, conn: Any) -> None:
    if stats._started:
        stats.seconds += time.perf_counter() - stats._started.pop()
        if stats.tracer is not None:
            stats.tracer.end(conn)


def statement_failed(stats: SqlStats, conn: Any, error: BaseException | None) -> None:
    """Close a failed statement's timing (and span) so the next one pairs correctly."""
    if stats._started:
        stats.seconds += time.perf_counter() - stats._started.pop()
        if stats.tracer is not None and conn is not None:
            if error is None:
                stats.tracer.end(conn)
            else:
                stats.tracer.fail(conn, error)


def _before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    stats = _sql_stats.get()
    if stats is not None and not statement.startswith("BEGIN"):
        statement_started(stats, conn, statement)


def _after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    stats = _sql_stats.get()
    if stats is not None and not statement.startswith("BEGIN"):
        statement_ended(stats, conn)


def _execute_failed(exc_context: Any) -> None:
    """A statement raised: close its timing (and span) so the next one pairs correctly."""
    stats = _sql_stats.get()
    statement = exc_context.statement
    if stats is None or not statement or statement.startswith("BEGIN"):
        return
    if getattr(exc_context, "cursor", None) is None:
        return  # failed before before_cursor_execute ran
    statement_failed(stats, exc_context.connection, exc_context.original_exception)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver: we emit BEGIN IMMEDIATE ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA busy_timeout=10000",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_reader_on_connect(dbapi_connection: Any, record: Any) -> None:
    _sqlite_on_connect(dbapi_connection, record)
    # A read connection never writes: it runs without a transaction and is not rolled
    # back on return, so a write slipping onto it must fail rather than autocommit.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


async def _finish(future: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait until `future` is done even when the caller is cancelled meanwhile; return that
    cancellation (for the caller to re-raise once it has cleaned up), if there was one."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError as exc:
            cancelled = exc
    return cancelled


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """What `await coro` does after coro's first step yielded `yielded`."""
    if getattr(yielded, "_asyncio_future_blocking", None) is False:
        yielded._asyncio_future_blocking = True  # as `_start` found it, for the task
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # thrown in (a cancellation): passed on
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return cast(T, stop.value)
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return cast(T, stop.value)


async def _rest(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await _resume(coro, yielded)


def _start(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """Run `coro` up to its first suspension, inline: (True, its result) when it never
    suspended, else (False, a task running the rest).

    A pooled checkout or return that needs no I/O (the common case) then costs no task
    and no trip through the event loop; one that waits (a new connection, a full pool, a
    rollback on return) goes on in a task, out of reach of the caller's cancellation."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    if getattr(yielded, "_asyncio_future_blocking", None):
        # What a task does on the spot with the future a coroutine awaits: until the task
        # for the rest takes it over (`_resume`), others may await the same future.
        yielded._asyncio_future_blocking = False
    return False, asyncio.ensure_future(_rest(coro, yielded))


def run_inline(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """`_start`, with what `coro` raises inline handed back as a failed future:
    (True, result) or (False, an awaitable: the task for the rest, or that future)."""
    try:
        return _start(coro)
    except (Exception, asyncio.CancelledError) as exc:
        failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if isinstance(exc, asyncio.CancelledError):
            failed.cancel()
        else:
            failed.set_exception(exc)
        return False, failed


async def _checkout(engine: AsyncEngine) -> AsyncConnection:
    """`engine.connect()`, entered so that a cancellation cannot strand the connection.

    Entering an AsyncConnection checks a connection out of the pool and then, on an engine
    with an isolation-level option (the autocommit reader), awaits the driver to apply it
    (a round trip to aiosqlite's thread). Cancelled there (graphql-core cancels the fields
    beside one whose error nulls their parent), SQLAlchemy neither returns the connection
    nor hands it to anyone: it stays checked out until the garbage collector finds it
    ("non-checked-in connection"). So a checkout that has to wait goes on in a task of
    its own that the caller's cancellation does not interrupt (`_start`); a connection
    that arrives for a cancelled caller is closed, then the cancellation goes on.
    """
    finished, checkout = _start(engine.connect().start())
    if finished:
        return cast(AsyncConnection, checkout)
    cancelled = await _finish(checkout)
    if cancelled is None:
        return checkout.result()
    if not checkout.cancelled() and checkout.exception() is None:
        await _close(checkout.result())
    raise cancelled


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end even when the caller is cancelled meanwhile (that cancellation
    is raised afterwards); inline as far as it does not wait (`_start`)."""
    finished, running = _start(coro)
    if finished:
        return cast(T, running)
    cancelled = await _finish(running)
    if cancelled is not None:
        raise cancelled
    return cast(T, running.result())


async def _close(conn: AsyncConnection) -> None:
    """Close (return to the pool) to the end, even when the caller is cancelled meanwhile."""
    await shielded(conn.close())


# The execution option marking connections from `Database.read()`: autocommit reads,
# which models.reads runs on the driver directly.
READ_OPTION = "shopql_read"


class BuiltStatements:
    """Statements built once per distinct description (a hashable key of everything they
    depend on) and reused: building a Select and deriving its cache key each time costs
    more than running SQLAlchemy's cached compilation of it. Bounded: past `size` keys
    it starts over, so cursors or ids in keys cannot grow it without limit."""

    __slots__ = ("_built", "_size")

    def __init__(self, size: int = 256) -> None:
        self._built: dict[Any, Any] = {}
        self._size = size

    def get(self, key: Any, build: Callable[[], T]) -> T:
        built = self._built.get(key)
        if built is None:
            built = self.keep(key, build())
        return cast(T, built)

    def find(self, key: Any) -> Any | None:
        """What was kept under `key`, if anything (for values built asynchronously)."""
        return self._built.get(key)

    def keep(self, key: Any, built: T) -> T:
        if len(self._built) >= self._size:
            self._built.clear()
        self._built[key] = built
        return built


class _Read:
    """`async with db.read() as conn`: a connection for the block (a class rather than an
    async generator: it is entered several times per request).

    A read connection that comes back healthy is kept aside for the next read instead of
    going back to SQLAlchemy's pool (`Database._idle_reads`, at most `pool_size`): a
    checkout and a check-in through the pool cost about as much CPU as the statement on
    PostgreSQL (a greenlet each, the pool's events, the isolation level set and reset).
    Kept aside, it stays checked out of the pool, in autocommit with nothing begun."""

    __slots__ = ("_conn", "_db")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        idle = self._db._idle_reads
        self._conn = idle.pop() if idle else await _checkout(self._db._reader)
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        db = self._db
        if (
            len(db._idle_reads) < db._idle_limit
            and not db._disposing
            and conn.sync_connection is not None
            and not conn.invalidated
            and not conn.in_transaction()
        ):
            db._idle_reads.append(conn)
        else:
            await _close(conn)


class Database:
    """One engine per process; hands out read connections and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Up to 2 x pool_size connections, every one kept once opened (no overflow). With
        # overflow, a connection above pool_size was closed on its return and a new one
        # opened at the next peak: at 32 concurrent requests (a request runs its sibling
        # batches on connections of their own at once) one connect per seven requests, each
        # a new server process, asyncpg's start-up queries and its statements prepared again.
        kwargs: dict[str, Any] = {"echo": echo, "pool_size": 2 * pool_size, "max_overflow": 0}
        if not self.is_sqlite:
            kwargs["pool_pre_ping"] = False
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        sync_engine = self.engine.sync_engine
        if self.is_sqlite:
            event.listen(sync_engine, "connect", _sqlite_on_connect)
        event.listen(sync_engine, "before_cursor_execute", _before_execute)
        event.listen(sync_engine, "after_cursor_execute", _after_execute)
        event.listen(sync_engine, "handle_error", _execute_failed)
        # Reads. PostgreSQL: the same pool, switched to autocommit per checkout (asyncpg
        # applies that without a round trip). SQLite: a pool of its own, autocommit from
        # the connect on, `query_only`, and no rollback on return: switching the isolation
        # level per checkout (and resetting it, and rolling back on return) cost aiosqlite
        # ~6 thread round trips per read, more than the read itself.
        self._reader_engine: AsyncEngine | None = None
        if self.is_sqlite:
            self._reader_engine = create_async_engine(
                url,
                echo=echo,
                pool_size=2 * pool_size,
                max_overflow=0,
                isolation_level="AUTOCOMMIT",
                skip_autocommit_rollback=True,
            )
            reader_sync = self._reader_engine.sync_engine
            event.listen(reader_sync, "connect", _sqlite_reader_on_connect)
            event.listen(reader_sync, "before_cursor_execute", _before_execute)
            event.listen(reader_sync, "after_cursor_execute", _after_execute)
            event.listen(reader_sync, "handle_error", _execute_failed)
            self._reader: AsyncEngine = self._reader_engine.execution_options(**{READ_OPTION: True})
        else:
            self._reader = self.engine.execution_options(
                isolation_level="AUTOCOMMIT", **{READ_OPTION: True}
            )
        # Read connections kept checked out between reads (`_Read`), most recent last.
        self._idle_reads: list[AsyncConnection] = []
        self._idle_limit = pool_size
        self._disposing = False
        self.events = EventBus()

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def read(self) -> _Read:
        """An autocommit connection for reads (`async with`); one per concurrent task."""
        return _Read(self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block exits normally, else rolled back."""
        await self._spare_idle_reads()
        conn = await _checkout(self.engine)
        try:
            if self.is_sqlite:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                await flush_pending(conn)  # the durable outbox, atomic with the change
            except BaseException:
                take_pending(conn)
                await conn.rollback()
                raise
            try:
                await conn.commit()
            finally:
                events = take_pending(conn)
            if events:
                self.events.publish(events)
        finally:
            await _close(conn)

    async def _spare_idle_reads(self) -> None:
        """On PostgreSQL reads and writes share one pool: a write that would wait for a
        connection while reads keep idle ones aside gets one of those back into the pool."""
        if self.is_sqlite or not self._idle_reads:
            return
        pool: Any = self.engine.pool
        if pool.checkedin() == 0 and pool.checkedout() >= pool.size():
            await _close(self._idle_reads.pop(0))

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    def checked_out(self) -> int:
        """Connections in use (reads and writes): out of the pools and not kept idle."""
        pools = [self.engine.pool]
        if self._reader_engine is not None:
            pools.append(self._reader_engine.pool)
        out = sum(pool.checkedout() for pool in pools)  # type: ignore[attr-defined]
        return int(out) - len(self._idle_reads)

    async def dispose(self) -> None:
        self._disposing = True
        while self._idle_reads:
            await _close(self._idle_reads.pop())
        self._disposing = False
        if self._reader_engine is not None:
            await self._reader_engine.dispose()
        await self.engine.dispose()
