"""Per-request DataLoaders for the audit log (for `node`). It needs MANAGE_STAFF, as
`auditLog` does: without it every key is null and nothing is read."""

from __future__ import annotations

from functools import cached_property

from models.audit import queries as q
from models.audit.queries import AuditRecord
from models.dataloader import DataLoader
from models.db import Database


class AuditLoaders:
    def __init__(self, db: Database, *, manages_staff: bool) -> None:
        self.db = db
        self.manages_staff = manages_staff

    @cached_property
    def entry_by_id(self) -> DataLoader[int, AuditRecord | None]:
        async def batch(keys: list[int]) -> list[AuditRecord | None]:
            if not self.manages_staff:
                return [None] * len(keys)
            async with self.db.read() as conn:
                found = await q.entries_by_ids(conn, ids=keys)
            return [found.get(key) for key in keys]

        return DataLoader(batch)
