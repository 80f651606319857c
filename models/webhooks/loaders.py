"""Per-request DataLoaders for webhook endpoints and their deliveries (for `node` and
`WebhookDelivery.webhook`). Everything here needs MANAGE_STAFF, as `webhooks` and
`webhookDeliveries` do: without it every key is null and nothing is read."""

from __future__ import annotations

from models.dataloader import DataLoader, cached_property, keyed_loader
from models.db import Database
from models.webhooks import queries as q
from models.webhooks.queries import DeliveryRecord, WebhookRecord


class WebhookLoaders:
    def __init__(self, db: Database, *, manages_staff: bool) -> None:
        self.db = db
        self.manages_staff = manages_staff

    @cached_property
    def webhook_by_id(self) -> DataLoader[int, WebhookRecord | None]:
        db = self.db  # not self: a loader the container holds must not hold it back
        return keyed_loader(lambda ids: q.webhooks_by_ids(db, ids=ids), allowed=self.manages_staff)

    @cached_property
    def delivery_by_id(self) -> DataLoader[int, DeliveryRecord | None]:
        db = self.db
        return keyed_loader(
            lambda ids: q.deliveries_by_ids(db, ids=ids), allowed=self.manages_staff
        )
