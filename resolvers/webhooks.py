"""Outbound webhooks (MANAGE_STAFF): endpoints, their deliveries, replays.

URLs are checked against SSRF when saved (http(s) only, no credentials, no private,
loopback, link-local or reserved addresses unless SHOPQL_WEBHOOK_ALLOW_PRIVATE=1) and
again by the worker at every connection. Secrets are write-only: the API says whether
one is set, never what it is, and they are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from models.audit.queries import record_audit
from models.dataloader import DataLoader
from models.errors import InvalidInput, Problem
from models.events import WEBHOOK_DELIVERY_QUEUED, record_event
from models.pagination import Page, PageArgs, Window
from models.webhooks import queries as q
from models.webhooks.queries import AttemptRecord, DeliveryRecord, WebhookRecord
from models.webhooks.security import UnsafeTarget, check_url
from models.webhooks.tables import DELIVERY_STATUSES, WEBHOOK_EVENTS
from resolvers import ids
from resolvers.admin import Result, decode_id, delete_audited, fail
from resolvers.context import Context

logger = logging.getLogger("shopql.webhooks")

PERMISSION = "MANAGE_STAFF"
MIN_SECRET, MAX_SECRET = 16, 256


class WebhookCreateInput(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def events(self) -> Sequence[Any]: ...
    @property
    def secret(self) -> str: ...
    @property
    def is_active(self) -> bool | None: ...


class WebhookUpdateInput(Protocol):
    @property
    def url(self) -> str | None: ...
    @property
    def events(self) -> Sequence[Any] | None: ...
    @property
    def secret(self) -> str | None: ...
    @property
    def is_active(self) -> bool | None: ...


async def _clean_url(ctx: Context, value: str, problems: list[Problem]) -> str | None:
    url = value.strip()
    try:
        await check_url(url, allow_private=ctx.settings.webhook_allow_private)
    except UnsafeTarget as exc:
        problems.append(Problem("INVALID", str(exc), "input.url"))
        return None
    return url


def _clean_events(values: Sequence[Any], problems: list[Problem]) -> tuple[str, ...] | None:
    names = [str(getattr(v, "value", v)) for v in values]
    if not names:
        problems.append(Problem("REQUIRED", "subscribe to at least one event", "input.events"))
    elif len(set(names)) != len(names):
        problems.append(Problem("INVALID", "each event at most once", "input.events"))
    elif set(names) - set(WEBHOOK_EVENTS):  # enum input makes this unreachable over GraphQL
        problems.append(Problem("INVALID", "unknown event", "input.events"))
    else:
        return tuple(names)
    return None


def _clean_secret(value: str, problems: list[Problem]) -> str | None:
    if not MIN_SECRET <= len(value) <= MAX_SECRET:
        problems.append(
            Problem(
                "INVALID", f"a secret has {MIN_SECRET} to {MAX_SECRET} characters", "input.secret"
            )
        )
    elif not all("!" <= ch <= "~" for ch in value):
        problems.append(
            Problem("INVALID", "a secret is printable ASCII without spaces", "input.secret")
        )
    else:
        return value
    return None


async def webhook_create(ctx: Context, data: WebhookCreateInput) -> Result[WebhookRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    events = _clean_events(data.events, problems)
    secret = _clean_secret(data.secret, problems)
    url = await _clean_url(ctx, data.url, problems) if not problems else None
    if problems:
        return Result(None, problems)
    assert url is not None and events is not None and secret is not None
    is_active = data.is_active is not False
    async with ctx.db.transaction() as conn:
        webhook_id = await q.create_webhook(
            conn, url=url, secret=secret, events=events, is_active=is_active
        )
        await record_audit(
            conn,
            actor=viewer,
            action="webhookCreate",
            object_type="Webhook",
            object_key=webhook_id,
            changed=["url", "events", "secret"]
            + (["isActive"] if data.is_active is not None else []),
        )
        created = await q.lock_webhook(conn, webhook_id=webhook_id)
    logger.info("webhook created: webhook_id=%s by user_id=%s", webhook_id, viewer.id)
    return Result(created)


async def webhook_update(ctx: Context, gid: str, data: WebhookUpdateInput) -> Result[WebhookRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    webhook_id = decode_id(gid, "Webhook", "id", problems)
    events = _clean_events(data.events, problems) if data.events is not None else None
    secret = _clean_secret(data.secret, problems) if data.secret is not None else None
    url = None
    if data.url is not None and not problems:
        url = await _clean_url(ctx, data.url, problems)
    if problems:
        return Result(None, problems)
    assert webhook_id is not None
    async with ctx.db.transaction() as conn:
        current = await q.lock_webhook(conn, webhook_id=webhook_id)
        if current is None:
            return fail("NOT_FOUND", "no webhook has this ID", "id")
        values: dict[str, Any] = {}
        changed: list[str] = []
        if url is not None and url != current.url:
            values["url"] = url
            changed.append("url")
        if secret is not None:
            values["secret"] = secret
            changed.append("secret")  # never compared: the old value is not read back
        if data.is_active is not None and data.is_active != current.is_active:
            values["is_active"] = data.is_active
            changed.append("isActive")
        new_events = events if events is not None and set(events) != set(current.events) else None
        if new_events is not None:
            changed.append("events")
        if changed:
            await q.update_webhook(conn, webhook_id=webhook_id, values=values, events=new_events)
            await record_audit(
                conn,
                actor=viewer,
                action="webhookUpdate",
                object_type="Webhook",
                object_key=webhook_id,
                changed=changed,
            )
        updated = await q.lock_webhook(conn, webhook_id=webhook_id)
    return Result(updated)


async def webhook_delete(ctx: Context, gid: str) -> Result[str]:
    """Delete an endpoint with its pending deliveries and delivery log."""

    async def delete(conn: AsyncConnection, webhook_id: int) -> bool:
        return await q.delete_webhook(conn, webhook_id=webhook_id)

    result = await delete_audited(
        ctx, gid, permission=PERMISSION, type_name="Webhook", noun="webhook",
        action="webhookDelete", delete=delete,
    )  # fmt: skip
    if result.value is not None:
        logger.info("webhook deleted: %s by user_id=%s", gid, getattr(ctx.viewer, "id", None))
    return result


async def webhook_delivery_retry(ctx: Context, gid: str) -> Result[DeliveryRecord]:
    """Send a delivery again now: a retry when pending or failed, a replay when delivered
    (same delivery ID and body, so receivers that deduplicate will ignore a replay of
    something they accepted). Starts a fresh 24-hour retry window."""
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    delivery_id = decode_id(gid, "WebhookDelivery", "id", problems)
    if problems:
        return Result(None, problems)
    assert delivery_id is not None
    async with ctx.db.transaction() as conn:
        if not await q.requeue_delivery(conn, delivery_id=delivery_id):
            return fail("NOT_FOUND", "no webhook delivery has this ID", "id")
        await record_audit(
            conn,
            actor=viewer,
            action="webhookDeliveryRetry",
            object_type="WebhookDelivery",
            object_key=delivery_id,
        )
        record_event(conn, WEBHOOK_DELIVERY_QUEUED, {"delivery_id": delivery_id})
    found = await q.deliveries_by_ids(ctx.db, ids=[delivery_id])
    return Result(found.get(delivery_id))


# --------------------------------------------------------------------------- reads


async def webhooks(ctx: Context) -> list[WebhookRecord]:
    ctx.require_permission(PERMISSION)
    return await q.list_webhooks(ctx.db)


class DeliveryFilterInput(Protocol):
    @property
    def webhook_id(self) -> str | None: ...
    @property
    def status(self) -> Any | None: ...
    @property
    def event(self) -> Any | None: ...


def _delivery_filter(value: DeliveryFilterInput | None) -> q.DeliveryFilter:
    if value is None:
        return q.DeliveryFilter()
    webhook_id = (
        ids.decode(value.webhook_id, "Webhook", field="filter.webhookId")
        if value.webhook_id is not None
        else None
    )
    status = getattr(value.status, "value", value.status)
    event = getattr(value.event, "value", value.event)
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidInput("unknown status", field="filter.status")
    if event is not None and event not in WEBHOOK_EVENTS:
        raise InvalidInput("unknown event", field="filter.event")
    return q.DeliveryFilter(webhook_id=webhook_id, status=status, event=event)


async def webhook_deliveries(
    ctx: Context, *, args: PageArgs, delivery_filter: DeliveryFilterInput | None
) -> Page[DeliveryRecord]:
    """Newest first. Needs MANAGE_STAFF."""
    ctx.require_permission(PERMISSION)
    return await q.list_deliveries(
        ctx.db,
        window=q.delivery_window(args),
        delivery_filter=_delivery_filter(delivery_filter),
    )


async def deliveries_of(ctx: Context, webhook_id: int, *, args: PageArgs) -> Page[DeliveryRecord]:
    """`Webhook.deliveries`: only reachable through MANAGE_STAFF fields, checked again.
    Every webhook's page on a list comes from one statement (and one for the counts)."""
    ctx.require_permission(PERMISSION)
    window = q.delivery_window(args)
    windows: dict[PageArgs, Window] = ctx.cache.setdefault("webhook_delivery_windows", {})
    windows.setdefault(args, window)
    rows = await _deliveries_of_webhook(ctx, windows).load((args, webhook_id))

    async def count() -> int:
        return await _delivery_count_of_webhook(ctx).load(webhook_id)

    return q.delivery_page(window, rows, count)


def _deliveries_of_webhook(
    ctx: Context, windows: dict[PageArgs, Window]
) -> DataLoader[tuple[PageArgs, int], list[Any]]:
    loader = ctx.cache.get("webhook_deliveries_of")
    if loader is None:

        async def batch(keys: list[tuple[PageArgs, int]]) -> list[list[Any]]:
            groups: dict[PageArgs, list[int]] = {}
            for args, webhook_id in keys:
                groups.setdefault(args, []).append(webhook_id)
            found: dict[tuple[PageArgs, int], list[Any]] = {}
            for args, webhook_ids in groups.items():
                rows = await q.deliveries_by_webhooks(
                    ctx.db, webhook_ids=webhook_ids, window=windows[args]
                )
                for webhook_id in webhook_ids:
                    found[(args, webhook_id)] = rows.get(webhook_id, [])
            return [found[key] for key in keys]

        loader = ctx.cache["webhook_deliveries_of"] = DataLoader(batch, max_batch_size=100)
    return loader


def _delivery_count_of_webhook(ctx: Context) -> DataLoader[int, int]:
    loader = ctx.cache.get("webhook_delivery_counts")
    if loader is None:

        async def batch(keys: list[int]) -> list[int]:
            found = await q.delivery_counts_by_webhooks(ctx.db, webhook_ids=keys)
            return [found.get(key, 0) for key in keys]

        loader = ctx.cache["webhook_delivery_counts"] = DataLoader(batch)
    return loader


def attempt_log(ctx: Context) -> DataLoader[int, list[AttemptRecord]]:
    """Per request: the attempt logs of every delivery on the page in one statement."""
    loader = ctx.cache.get("webhook_attempts")
    if loader is None:

        async def batch(keys: list[int]) -> list[list[AttemptRecord]]:
            found = await q.attempts_by_delivery(ctx.db, delivery_ids=keys)
            return [found.get(key, []) for key in keys]

        loader = ctx.cache["webhook_attempts"] = DataLoader(batch)
    return loader


def webhook_by_id(ctx: Context) -> DataLoader[int, WebhookRecord | None]:
    """`WebhookDelivery.webhook`: the request's one webhook loader (MANAGE_STAFF, like
    `node`), so a delivery's webhook and a Webhook node share one batch."""
    return ctx.webhooks.webhook_by_id
