"""Outbound webhooks (MANAGE_STAFF): endpoints, deliveries and their attempt log."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from models.pagination import PageArgs
from models.webhooks.queries import DeliveryRecord, WebhookRecord
from models.webhooks.worker import body_of
from resolvers import webhooks as r
from resolvers.context import Context
from schema.admin import StaffError, staff_mutation
from schema.fields import computed, global_id, records_of
from schema.relay import Connection, Node

Ctx = Info[Context, None]


@strawberry.enum(description="What a webhook can subscribe to.")
class WebhookEvent(Enum):
    ORDER_CREATED = strawberry.enum_value("ORDER_CREATED", description="data: orderId")
    ORDER_UPDATED = strawberry.enum_value(
        "ORDER_UPDATED", description="data: orderId, fields (what changed)"
    )
    PAYMENT_CHANGED = strawberry.enum_value(
        "PAYMENT_CHANGED", description="data: paymentId, orderId"
    )
    VARIANT_STOCK_CHANGED = strawberry.enum_value(
        "VARIANT_STOCK_CHANGED", description="data: variantIds"
    )


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = strawberry.enum_value(
        "PENDING", description="Not accepted yet; retried with backoff for 24 hours."
    )
    DELIVERED = strawberry.enum_value("DELIVERED", description="The receiver answered 2xx.")
    FAILED = strawberry.enum_value("FAILED", description="Gave up after 24 hours of retries.")


@strawberry.type(description="One HTTP attempt of a delivery.")
class WebhookAttempt:
    attempt: int
    status_code: int | None = strawberry.field(description="null when no response came")
    error: str | None
    duration_ms: int
    created_at: datetime


def _events(root: strawberry.Parent[WebhookRecord]) -> list[WebhookEvent]:
    return [WebhookEvent(e) for e in root.events]


def _event(root: strawberry.Parent[DeliveryRecord]) -> WebhookEvent:
    return WebhookEvent(root.event)


def _status(root: strawberry.Parent[DeliveryRecord]) -> WebhookDeliveryStatus:
    return WebhookDeliveryStatus(root.status)


def _payload(root: strawberry.Parent[DeliveryRecord]) -> str:
    return body_of(root.id, root.event, root.created_at, root.payload).decode()


def _attempt_log(root: strawberry.Parent[DeliveryRecord], info: Ctx) -> Any:
    return r.attempt_log(info.context).load(root.id)


def _webhook(root: strawberry.Parent[DeliveryRecord], info: Ctx) -> Any:
    return r.webhook_by_id(info.context).load(root.webhook_id)


@strawberry.type(description="An endpoint that receives signed event notifications.")
class Webhook(Node):
    id: strawberry.ID = global_id("Webhook")
    url: str
    events: list[WebhookEvent] = computed(_events, list[WebhookEvent])
    is_active: bool = strawberry.field(description="Inactive webhooks receive nothing new.")
    secret_set: bool = strawberry.field(
        description="Whether a signing secret is set (it is never shown)."
    )
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="Newest first.")
    async def deliveries(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[WebhookDelivery]:
        record: WebhookRecord = self  # type: ignore[assignment]  # the root object
        args = PageArgs(first=first, after=after, last=last, before=before)
        return await r.deliveries_of(info.context, record.id, args=args)  # type: ignore[return-value]

    is_type_of = records_of(WebhookRecord)


@strawberry.type(description="One event for one webhook, and how sending it went.")
class WebhookDelivery(Node):
    id: strawberry.ID = global_id("WebhookDelivery")
    webhook: Webhook | None = computed(_webhook, Webhook | None)
    event: WebhookEvent = computed(_event, WebhookEvent)
    status: WebhookDeliveryStatus = computed(_status, WebhookDeliveryStatus)
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None = strawberry.field(description="null unless PENDING")
    payload: str = computed(_payload, str, description="The JSON body the receiver gets.")
    attempt_log: list[WebhookAttempt] = computed(
        _attempt_log, list[WebhookAttempt], description="Oldest first."
    )

    is_type_of = records_of(DeliveryRecord)


@strawberry.input
class WebhookCreateInput:
    url: str = strawberry.field(description="http(s); public addresses only.")
    events: list[WebhookEvent]
    secret: str = strawberry.field(
        description="16-256 printable ASCII characters; signs every delivery (write-only)."
    )
    is_active: bool | None = strawberry.field(default=None, description="Default true.")


@strawberry.input
class WebhookUpdateInput:
    url: str | None = None
    events: list[WebhookEvent] | None = strawberry.field(
        default=None, description="Replaces the subscribed events."
    )
    secret: str | None = strawberry.field(default=None, description="Rotates the secret.")
    is_active: bool | None = None


@strawberry.input
class WebhookDeliveryFilter:
    webhook_id: strawberry.ID | None = None
    status: WebhookDeliveryStatus | None = None
    event: WebhookEvent | None = None


@strawberry.type
class WebhookCreatePayload:
    webhook: Webhook | None
    errors: list[StaffError]


@strawberry.type
class WebhookUpdatePayload:
    webhook: Webhook | None
    errors: list[StaffError]


@strawberry.type
class WebhookDeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class WebhookDeliveryRetryPayload:
    delivery: WebhookDelivery | None
    errors: list[StaffError]


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Every webhook endpoint, oldest first. Needs MANAGE_STAFF.")
    async def webhooks(self, info: Ctx) -> list[Webhook]:
        return await r.webhooks(info.context)  # type: ignore[return-value]

    @strawberry.field(description="Webhook deliveries, newest first. Needs MANAGE_STAFF.")
    async def webhook_deliveries(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: WebhookDeliveryFilter | None = None,
    ) -> Connection[WebhookDelivery]:
        args = PageArgs(first=first, after=after, last=last, before=before)
        return await r.webhook_deliveries(info.context, args=args, delivery_filter=filter)  # type: ignore[return-value]


@strawberry.type
class WebhookMutation:
    @staff_mutation(
        "MANAGE_STAFF", "Register an endpoint for signed event deliveries (see the README)."
    )
    async def webhook_create(self, info: Ctx, input: WebhookCreateInput) -> WebhookCreatePayload:
        result = await r.webhook_create(info.context, input)
        return WebhookCreatePayload(webhook=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation("MANAGE_STAFF", "Change an endpoint's URL, events, secret or state.")
    async def webhook_update(
        self, info: Ctx, id: strawberry.ID, input: WebhookUpdateInput
    ) -> WebhookUpdatePayload:
        result = await r.webhook_update(info.context, id, input)
        return WebhookUpdatePayload(webhook=result.value, errors=result.errors)  # type: ignore[arg-type]

    @staff_mutation("MANAGE_STAFF", "Delete an endpoint, its pending deliveries and its log.")
    async def webhook_delete(self, info: Ctx, id: strawberry.ID) -> WebhookDeletePayload:
        result = await r.webhook_delete(info.context, id)
        return WebhookDeletePayload(
            deleted_id=strawberry.ID(result.value) if result.value else None,
            errors=result.errors,  # type: ignore[arg-type]
        )

    @staff_mutation(
        "MANAGE_STAFF",
        "Send a delivery again now (retry a pending or failed one, replay a delivered one; "
        "same delivery ID and body) with a fresh 24-hour retry window.",
    )
    async def webhook_delivery_retry(
        self, info: Ctx, id: strawberry.ID
    ) -> WebhookDeliveryRetryPayload:
        result = await r.webhook_delivery_retry(info.context, id)
        return WebhookDeliveryRetryPayload(delivery=result.value, errors=result.errors)  # type: ignore[arg-type]
