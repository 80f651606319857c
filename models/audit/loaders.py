"""Per-request DataLoaders for the audit log (for `node`). It needs MANAGE_STAFF, as
`auditLog` does: without it every key is null and nothing is read."""

from __future__ import annotations

from models.audit import queries as q
from models.audit.queries import AuditRecord
from models.dataloader import DataLoader, cached_property, keyed_loader
from models.db import Database


class AuditLoaders:
    def __init__(self, db: Database, *, manages_staff: bool) -> None:
        self.db = db
        self.manages_staff = manages_staff

    @cached_property
    def entry_by_id(self) -> DataLoader[int, AuditRecord | None]:
        db = self.db  # not self: a loader the container holds must not hold it back

        async def fetch(ids: list[int]) -> dict[int, AuditRecord]:
            async with db.read() as conn:
                return await q.entries_by_ids(conn, ids=ids)

        return keyed_loader(fetch, allowed=self.manages_staff)
