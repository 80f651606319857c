"""The per-request context every resolver receives as `info.context`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from models.catalog.loaders import CatalogLoaders
from models.db import Database, SqlStats
from models.settings import Settings


@dataclass(eq=False)
class Context:
    db: Database
    settings: Settings
    request: Any = None
    response: Any = None
    sql: SqlStats = field(default_factory=SqlStats)

    @property
    def can_see_unpublished(self) -> bool:
        # Staff with MANAGE_PRODUCTS arrive with accounts; until then nobody does.
        return False

    @cached_property
    def catalog(self) -> CatalogLoaders:
        return CatalogLoaders(self.db, published_only=not self.can_see_unpublished)
