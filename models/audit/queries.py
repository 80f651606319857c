"""Writing and reading the audit log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from models.accounts.queries import UserRecord
from models.audit.tables import audit_log
from models.db import Database, utcnow
from models.pagination import Page, PageArgs, SortKey, Window


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    actor_id: int | None
    actor_email: str
    action: str
    object_type: str
    object_key: str
    changed_fields: tuple[str, ...]
    created_at: datetime


async def record_audit(
    conn: AsyncConnection,
    *,
    actor: UserRecord,
    action: str,
    object_type: str,
    object_key: int | str,
    changed: Iterable[str] = (),
) -> None:
    """Log one change by `actor`, on the transaction that makes it. `changed` names the
    input fields (camelCase, as the client sent them) whose values changed; never values."""
    await conn.execute(
        sa.insert(audit_log).values(
            actor_id=actor.id,
            actor_email=actor.email,
            action=action,
            object_type=object_type,
            object_key=str(object_key),
            changed_fields=orjson.dumps(sorted(set(changed))).decode(),
            created_at=utcnow(),
        )
    )


async def record_audit_many(
    conn: AsyncConnection,
    *,
    actor: UserRecord,
    action: str,
    object_type: str,
    entries: Iterable[tuple[int | str, Iterable[str]]],
) -> None:
    """Several entries (one per object) in one statement, for bulk mutations."""
    now = utcnow()
    rows = [
        {
            "actor_id": actor.id,
            "actor_email": actor.email,
            "action": action,
            "object_type": object_type,
            "object_key": str(key),
            "changed_fields": orjson.dumps(sorted(set(changed))).decode(),
            "created_at": now,
        }
        for key, changed in entries
    ]
    if rows:
        await conn.execute(sa.insert(audit_log), rows)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor_id: int | None = None
    action: str | None = None
    object_type: str | None = None
    object_key: str | None = None
    created_gte: datetime | None = None
    created_lte: datetime | None = None


_COLUMNS = [audit_log.c[name] for name in AuditRecord.__slots__]


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        row.id,
        row.actor_id,
        row.actor_email,
        row.action,
        row.object_type,
        row.object_key,
        tuple(orjson.loads(row.changed_fields)),
        row.created_at,
    )


def _conditions(f: AuditFilter) -> list[ColumnElement[bool]]:
    c = audit_log.c
    conds: list[ColumnElement[bool]] = []
    if f.actor_id is not None:
        conds.append(c.actor_id == f.actor_id)
    if f.action is not None:
        conds.append(c.action == f.action)
    if f.object_type is not None:
        conds.append(c.object_type == f.object_type)
    if f.object_key is not None:
        conds.append(c.object_key == f.object_key)
    if f.created_gte is not None:
        conds.append(c.created_at >= f.created_gte)
    if f.created_lte is not None:
        conds.append(c.created_at <= f.created_lte)
    return conds


def audit_window(args: PageArgs) -> Window:
    """Newest first."""
    sort = SortKey("audit", audit_log.c.id, audit_log.c.id, True, "int")
    return Window.of(sort, args)


async def list_audit(
    db: Database, *, window: Window, audit_filter: AuditFilter
) -> Page[AuditRecord]:
    base = sa.select(*_COLUMNS).where(*_conditions(audit_filter))
    async with db.read() as conn:
        rows = (await conn.execute(window.apply(base))).all()

    async def count() -> int:
        async with db.read() as conn:
            total = await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
            return int(total.scalar_one())

    return window.page(rows, _record, count)


async def entries_by_ids(conn: AsyncConnection, *, ids: Sequence[int]) -> dict[int, AuditRecord]:
    """Entries by ID, one statement. Callers decide first that the viewer may read the log."""
    rows = await conn.execute(sa.select(*_COLUMNS).where(audit_log.c.id.in_(ids)))
    return {row.id: _record(row) for row in rows}
