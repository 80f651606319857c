"""Engine, connections and transactions for SQLite (embedded default) and PostgreSQL.

Reads run on autocommit connections (one per DataLoader batch, never shared between
concurrent batches). Writes run inside `Database.transaction()`, which on SQLite starts
with `BEGIN IMMEDIATE` so concurrent writers queue on the lock instead of failing to
upgrade a deferred transaction.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import DateTime, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from models.events import EventBus, flush_pending, take_pending

if TYPE_CHECKING:
    from models.telemetry import SqlTracer

metadata = SQLModel.metadata


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


def _before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    stats = _sql_stats.get()
    if stats is not None and not statement.startswith("BEGIN"):
        stats.count += 1
        stats._started.append(time.perf_counter())
        if stats.tracer is not None:
            stats.tracer.start(conn, statement)


def _after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    stats = _sql_stats.get()
    if stats is not None and stats._started and not statement.startswith("BEGIN"):
        stats.seconds += time.perf_counter() - stats._started.pop()
        if stats.tracer is not None:
            stats.tracer.end(conn)


def _execute_failed(exc_context: Any) -> None:
    """A statement raised: close its timing (and span) so the next one pairs correctly."""
    stats = _sql_stats.get()
    statement = exc_context.statement
    if stats is None or not stats._started or not statement or statement.startswith("BEGIN"):
        return
    if getattr(exc_context, "cursor", None) is None:
        return  # failed before before_cursor_execute ran
    stats.seconds += time.perf_counter() - stats._started.pop()
    if stats.tracer is not None and exc_context.connection is not None:
        stats.tracer.fail(exc_context.connection, exc_context.original_exception)


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


class Database:
    """One engine per process; hands out read connections and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = False
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        sync_engine = self.engine.sync_engine
        if self.is_sqlite:
            event.listen(sync_engine, "connect", _sqlite_on_connect)
        event.listen(sync_engine, "before_cursor_execute", _before_execute)
        event.listen(sync_engine, "after_cursor_execute", _after_execute)
        event.listen(sync_engine, "handle_error", _execute_failed)
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.events = EventBus()

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """An autocommit connection for reads; one per concurrent task."""
        async with self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block exits normally, else rolled back."""
        async with self.engine.connect() as conn:
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

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
