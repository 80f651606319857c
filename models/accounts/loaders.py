"""Per-request DataLoaders for accounts, scoped to the viewer in the query itself."""

from __future__ import annotations

from models.accounts import queries as q
from models.accounts.queries import AddressRecord, UserRecord
from models.dataloader import DataLoader, cached_property
from models.db import Database


class AccountLoaders:
    def __init__(self, db: Database, *, viewer_id: int | None, sees_all_users: bool) -> None:
        self.db = db
        self.viewer_id = viewer_id
        self.sees_all_users = sees_all_users

    @cached_property
    def user_by_id(self) -> DataLoader[int, UserRecord | None]:
        """Users the viewer may see: themselves, or anyone for MANAGE_STAFF/MANAGE_ORDERS."""

        async def batch(ids: list[int]) -> list[UserRecord | None]:
            visible = ids if self.sees_all_users else [i for i in ids if i == self.viewer_id]
            if not visible:
                return [None] * len(ids)
            async with self.db.read() as conn:
                found = await q.users_by_ids(conn, ids=visible)
            return [found.get(i) for i in ids]

        return DataLoader(batch)

    @cached_property
    def addresses_by_user_id(self) -> DataLoader[int, list[AddressRecord]]:
        async def batch(user_ids: list[int]) -> list[list[AddressRecord]]:
            async with self.db.read() as conn:
                found = await q.addresses_by_user_ids(conn, user_ids=user_ids)
            return [found.get(i, []) for i in user_ids]

        return DataLoader(batch)

    @cached_property
    def address_by_id(self) -> DataLoader[int, AddressRecord | None]:
        """The viewer's own addresses; for staff who may see every user, any user's
        (as `User.addresses` shows them). Anyone else's read as missing."""

        async def batch(ids: list[int]) -> list[AddressRecord | None]:
            async with self.db.read() as conn:
                if self.sees_all_users:
                    found = await q.user_addresses_by_ids(conn, ids=ids)
                else:
                    found = await q.owned_addresses(conn, ids=ids, owner_id=self.viewer_id)
            return [found.get(i) for i in ids]

        return DataLoader(batch)
