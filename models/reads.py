"""Hot read statements run on the database driver directly, and `keys_in` for batches.

`fetch_all(conn, stmt, params)` answers the rows of a read statement, as
`(await conn.execute(stmt, params)).all()` would: rows with one attribute per selected
column, values through the columns' SQLAlchemy types. On a connection from
`Database.read()` (autocommit reads) the statement is compiled once (per statement
object) and run on the driver: asyncpg's `fetch` (its prepared-statement cache), or
aiosqlite's `execute_fetchall` (one trip to its thread; SQLAlchemy's adapter makes four).
SQLAlchemy's execution (execution context, greenlet switch, expanding-IN compilation,
result rows) was most of a batch's cost: on PostgreSQL the variants of 24 products took
0.53 ms through it and take 0.31 ms this way, the round trip included. Elsewhere
(transactions, statements this path cannot run as they are) it is SQLAlchemy's own
execution.

What SQLAlchemy does around a statement is kept: the request's statement count, time and
tracing span (models.db's cursor hooks); a connection that was lost, or whose statement
was cancelled, is invalidated rather than returned to the pool. (Driver errors arrive as
the driver raised them: no read path tells them apart; the API masks them either way.)

`keys_in(column)` is the batch condition, `column IN (:ids)` with the list of keys bound
as `ids` in one parameter: `= ANY($1)` on PostgreSQL, `IN (SELECT value FROM
json_each(?))` on SQLite, so one statement text serves every batch size (an expanding
`IN` on other dialects).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from models import db as _db

__all__ = ["fetch_all", "fetch_first", "keys_in"]


class _KeysIn(ColumnElement[bool]):
    """`column IN (:name)` for a list of keys bound under `name` (see `keys_in`)."""

    inherit_cache = True
    type = sa.Boolean()
    # A comparison: without this, dialects lacking booleans (SQLite) render it as
    # `(... IN (...)) = 1` in a WHERE clause, which no index serves.
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


@compiles(_KeysIn)
def _keys_in_default(element: _KeysIn, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(sa.bindparam(element.name, expanding=True)), **kw)


@compiles(_KeysIn, "sqlite")
def _keys_in_sqlite(element: _KeysIn, compiler: SQLCompiler, **kw: Any) -> str:
    # A JSON array in one parameter rather than one `?` per key: the same statement text
    # for every batch size, so it can run without SQLAlchemy's per-execution rendering.
    keys: sa.Select[Any] = sa.select(sa.column("value")).select_from(
        sa.func.json_each(sa.bindparam(element.name, type_=sa.JSON()))
    )
    return compiler.process(element.column.in_(keys.scalar_subquery()), **kw)


@compiles(_KeysIn, "postgresql")
def _keys_in_postgresql(element: _KeysIn, compiler: SQLCompiler, **kw: Any) -> str:
    keys = sa.bindparam(element.name, type_=postgresql.ARRAY(element.column.type))
    return compiler.process(element.column == sa.any_(keys), **kw)


def keys_in(column: ColumnElement[Any], name: str = "ids") -> ColumnElement[bool]:
    """The batch condition: `column` is one of the keys passed as `name` (a list)."""
    return _KeysIn(column, name)


class _Plan:
    """A statement compiled for the driver: its text, parameters in order (with their bind
    processors and compiled-in values) and the row type with its result processors."""

    __slots__ = ("baked", "binds", "results", "row", "sql")

    def __init__(
        self,
        sql: str,
        binds: tuple[tuple[str, Callable[[Any], Any] | None, Any], ...],
        row: Callable[..., Any],
        results: tuple[Callable[[Any], Any] | None, ...] | None,
        baked: frozenset[str] = frozenset(),
    ) -> None:
        self.sql = sql
        self.binds = binds
        self.row = row
        self.results = results
        self.baked = baked  # `IN (list)` parameters rendered into `sql`: not to be passed

    def arguments(self, params: Mapping[str, Any] | None) -> list[Any]:
        arguments = []
        for name, process, compiled_value in self.binds:
            value = compiled_value if params is None else params.get(name, compiled_value)
            arguments.append(value if process is None else process(value))
        return arguments

    def rows(self, records: Sequence[Any], into: Callable[..., Any] | None = None) -> list[Any]:
        make = self.row if into is None else into
        results = self.results
        if results is None:
            return [make(*record) for record in records]
        return [
            make(*[v if p is None else p(v) for p, v in zip(results, record, strict=True)])
            for record in records
        ]


_UNPLANNABLE = object()
# statement -> _Plan or _UNPLANNABLE; bounded (statements with cursors in them come and go).
# One per dialect: a process may read both (the test suite does), and a plan is the
# statement's text in its dialect.
_PLANS = {name: _db.BuiltStatements(size=1024) for name in ("postgresql", "sqlite")}


async def _plan(stmt: Any, dialect: Dialect, driver: Any) -> _Plan | None:
    """The statement as the driver runs it, or None where only SQLAlchemy can (values
    rendered per execution, such as a list passed for an expanding parameter, or columns
    that cannot name a row's attributes)."""
    compiled = stmt.compile(dialect=dialect)
    if compiled.literal_execute_params:
        return None
    columns = list(stmt.selected_columns)
    try:
        row = namedtuple("Row", stmt.selected_columns.keys())  # type: ignore[misc]
    except ValueError:
        return None  # duplicate or non-identifier column names
    sql, names, values = compiled.string, compiled.positiontup or [], compiled.params
    expanded: dict[str, Any] = {}  # name of one element of an `IN (list)` -> its bind
    baked: set[str] = set()
    if compiled.post_compile_params:
        # `column.in_([...])` with its values in the statement (one built per key): the
        # list rendered as one parameter per element, as SQLAlchemy does per execution.
        # A list passed at execution time (`bindparam(..., expanding=True)`) cannot be.
        for bind in compiled.post_compile_params:
            if not isinstance(bind.value, (list, tuple)) or bind.callable is not None:
                return None
            name = compiled.bind_names[bind]
            baked.update((name, bind.key))
            for i in range(1, len(bind.value) + 1):
                expanded[f"{name}_{i}"] = bind
        state = compiled.construct_expanded_state()
        sql, names, values = state.statement, state.positiontup or [], state.parameters
    binds = []
    for name in names:
        bind = compiled.binds.get(name)
        if bind is None:
            bind = expanded.get(name)
        if bind is None or bind.callable is not None:
            return None
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((name, process, values.get(name)))
    try:
        processors = [_result_processor(column, dialect, None) for column in columns]
    except Exception:  # it depends on the type the server answers with
        if dialect.name != "postgresql":
            return None
        attributes = (await driver.prepare(compiled.string)).get_attributes()
        types = [attribute.type.oid for attribute in attributes]
        processors = [
            _result_processor(column, dialect, oid)
            for column, oid in zip(columns, types, strict=True)
        ]
    results = tuple(processors) if any(p is not None for p in processors) else None
    return _Plan(sql, tuple(binds), row, results, frozenset(baked))


def _result_processor(column: Any, dialect: Dialect, type_code: Any) -> Any:
    return column.type.dialect_impl(dialect).result_processor(dialect, type_code)


async def _asyncpg_fetch(driver: Any, sql: str, arguments: list[Any]) -> Sequence[Any]:
    return cast(Sequence[Any], await driver.fetch(sql, *arguments))


async def _aiosqlite_fetch(driver: Any, sql: str, arguments: list[Any]) -> Sequence[Any]:
    # one trip to aiosqlite's thread (SQLAlchemy's adapter makes four: cursor, execute,
    # fetchall, close)
    return cast(Sequence[Any], await driver.execute_fetchall(sql, arguments))


_FETCH = {"postgresql": _asyncpg_fetch, "sqlite": _aiosqlite_fetch}


def _driver(conn: AsyncConnection) -> Any:
    """The driver's connection under a read connection (`Database.read()`), else None."""
    sync = conn.sync_connection
    if sync is None or not sync.get_execution_options().get(_db.READ_OPTION):
        return None  # a transaction: SQLAlchemy knows whether it has begun
    return sync.connection.driver_connection


async def fetch_all(
    conn: AsyncConnection,
    stmt: Any,
    params: Mapping[str, Any] | None = None,
    *,
    into: Callable[..., Any] | None = None,
) -> Sequence[Any]:
    """The rows of a read statement (see the module docstring); with `into`, each row is
    `into(*values)` instead (a record whose fields are the selected columns, in order),
    built straight from the driver's row."""
    driver = _driver(conn)
    if driver is None:
        return _into((await conn.execute(stmt, params)).all(), into)
    sync = conn.sync_connection
    assert sync is not None
    plans = _PLANS[sync.dialect.name]
    plan = plans.find(stmt)
    if plan is None:
        plan = plans.keep(stmt, await _plan(stmt, sync.dialect, driver) or _UNPLANNABLE)
    if not isinstance(plan, _Plan) or (plan.baked and params and not plan.baked.isdisjoint(params)):
        return _into((await conn.execute(stmt, params)).all(), into)
    arguments = plan.arguments(params)
    stats = _db.sql_stats()
    if stats is not None:
        _db.statement_started(stats, sync, plan.sql)
    try:
        records = await _FETCH[sync.dialect.name](driver, plan.sql, arguments)
    except Exception as error:
        if stats is not None:
            _db.statement_failed(stats, sync, error)
        if sync.dialect.name == "postgresql" and _disconnected(driver, error):
            await conn.invalidate(error)
        raise
    except BaseException:
        # Cancelled (graphql-core cancels a field whose sibling's error nulled the parent;
        # a request cancels what outlives it): asyncpg asks the server to cancel the query
        # from a task of its own, aiosqlite's thread finishes the statement. As SQLAlchemy
        # does, the connection is invalidated: closed once that is through, and never
        # handed out meanwhile.
        if stats is not None:
            _db.statement_failed(stats, sync, None)
        await _db.shielded(conn.invalidate())
        raise
    if stats is not None:
        _db.statement_ended(stats, sync)
    return plan.rows(records, into)


def _into(rows: Sequence[Any], into: Callable[..., Any] | None) -> Sequence[Any]:
    return rows if into is None else [into(*row) for row in rows]


async def fetch_first(
    conn: AsyncConnection, stmt: Any, params: Mapping[str, Any] | None = None
) -> Any | None:
    """The first row of a read statement, or None."""
    rows = await fetch_all(conn, stmt, params)
    return rows[0] if rows else None


def _disconnected(driver: Any, error: BaseException) -> bool:
    return (
        bool(driver.is_closed())
        or isinstance(error, (OSError, ConnectionError))
        or (type(error).__name__ in {"ConnectionDoesNotExistError", "InterfaceError"})
    )
