"""The per-request context every resolver receives as `info.context`, and the per-process
services it carries."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.accounts.loaders import AccountLoaders
from models.accounts.passwords import Passwords
from models.accounts.queries import UserRecord
from models.audit.loaders import AuditLoaders
from models.catalog.loaders import CatalogLoaders
from models.dataloader import cached_property
from models.db import Database, SqlStats
from models.errors import Forbidden, NotAuthenticated
from models.mail import Mailer
from models.orders.loaders import CommerceLoaders
from models.payments.gateways import Gateway
from models.settings import Settings
from models.throttle import Throttle
from models.webhooks.loaders import WebhookLoaders


@dataclass
class Services:
    """Created once per process by create_app and shared by every request."""

    passwords: Passwords
    login_throttle: Throttle
    mailer: Mailer
    gateways: Mapping[str, Gateway]
    # redis.asyncio client when REDIS_URL is set (models/redis_backend.py), else None.
    redis: Any = None


# The cached_property loader containers of Context (see `Context.drop_loaders`)
LOADER_CONTAINERS = ("catalog", "accounts", "commerce", "webhooks", "audit")


@dataclass(eq=False)
class Context:
    db: Database
    settings: Settings
    services: Services
    request: Any = None
    response: Any = None
    sql: SqlStats = field(default_factory=SqlStats)
    viewer: UserRecord | None = None
    session_id: str | None = None
    # Set when the request carried a token that is invalid, expired or revoked.
    auth_error: str | None = None
    client_ip: str = "unknown"
    # Per-request memo for values computed once (totals, shipping methods).
    cache: dict[str, Any] = field(default_factory=dict)
    # The session lookup of the request's token while it is still running (schema.http
    # starts it with the request and awaits it, `authenticated`, before the operation).
    authenticating: Awaitable[None] | None = None
    # The user id of the request's token once its signature checks out, before its
    # session is looked up: authentic, but not yet known to be signed in (the session may
    # be revoked). Only for reads started early and used once `viewer` agrees
    # (schema.speculation).
    token_user_id: int | None = None
    # The viewer's reads started before the session lookup ended (schema.speculation)
    reading_ahead: Any = None

    async def authenticated(self) -> None:
        """Wait for the viewer: until then `viewer` and `auth_error` are not settled."""
        pending = self.authenticating
        if pending is not None:
            await pending  # a task: every waiter gets its result (or what it raised)

    def sign_in(self, user: UserRecord, session_id: str) -> None:
        """The request continues as `user` (payload fields resolve with their rights)."""
        self.viewer, self.session_id, self.auth_error = user, session_id, None
        self.drop_loaders()

    def drop_loaders(self) -> None:
        """Forget every per-request loader container (their caches hold what the viewer
        could read before)."""
        for cached in LOADER_CONTAINERS:
            self.__dict__.pop(cached, None)

    def require_viewer(self) -> UserRecord:
        if self.viewer is None:
            raise NotAuthenticated(
                "your token is invalid or expired" if self.auth_error else "sign in to do this"
            )
        return self.viewer

    def require_permission(self, permission: str) -> UserRecord:
        viewer = self.require_viewer()
        if not viewer.has(permission):
            raise Forbidden(f"this needs the {permission} permission")
        return viewer

    def has_permission(self, permission: str) -> bool:
        return self.viewer is not None and self.viewer.has(permission)

    @property
    def can_see_unpublished(self) -> bool:
        return self.has_permission("MANAGE_PRODUCTS")

    @cached_property
    def catalog(self) -> CatalogLoaders:
        return CatalogLoaders(self.db, published_only=not self.can_see_unpublished)

    @cached_property
    def commerce(self) -> CommerceLoaders:
        viewer = self.viewer
        return CommerceLoaders(
            self.db,
            viewer_id=viewer.id if viewer else None,
            all_orders=self.has_permission("MANAGE_ORDERS"),
            all_promo_codes=self.has_permission("MANAGE_DISCOUNTS"),
        )

    @cached_property
    def accounts(self) -> AccountLoaders:
        viewer = self.viewer
        return AccountLoaders(
            self.db,
            viewer_id=viewer.id if viewer else None,
            sees_all_users=viewer is not None
            and (viewer.has("MANAGE_STAFF") or viewer.has("MANAGE_ORDERS")),
        )

    @cached_property
    def webhooks(self) -> WebhookLoaders:
        return WebhookLoaders(self.db, manages_staff=self.has_permission("MANAGE_STAFF"))

    @cached_property
    def audit(self) -> AuditLoaders:
        return AuditLoaders(self.db, manages_staff=self.has_permission("MANAGE_STAFF"))
