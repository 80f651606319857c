"""A plain-Python reference of the catalog, read straight from the tables.

Tests compute what the API should answer from this (filters, sorts, visibility) and
compare; the API's own code is not used to build the expectation.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from models.catalog.tables import (
    categories,
    collection_products,
    collections,
    images,
    products,
    variants,
)
from models.db import Database


def gid(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def amount(minor: int) -> str:
    """USD minor units as the API prints them."""
    return f"{Decimal(minor).scaleb(-2):f}"


@dataclass
class Product:
    id: int
    name: str
    slug: str
    description: str
    is_published: bool
    category_id: int | None
    created_at: datetime
    variants: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    collection_ids: set[int] = field(default_factory=set)

    @property
    def price_min(self) -> int:
        return min((v["price_amount"] for v in self.variants), default=0)

    @property
    def price_max(self) -> int:
        return max((v["price_amount"] for v in self.variants), default=0)

    @property
    def in_stock(self) -> bool:
        return any(v["quantity"] > 0 for v in self.variants)

    def sort_key(self, field: str) -> tuple[Any, int]:
        value: Any = {
            "NAME": self.name,
            "PRICE": self.price_min,
            "CREATED_AT": self.created_at,
        }[field]
        return (value, self.id)


@dataclass
class Catalog:
    products: dict[int, Product]
    categories: dict[int, dict[str, Any]]
    collections: dict[int, dict[str, Any]]

    def subtree(self, root: int) -> set[int]:
        found = {root}
        changed = True
        while changed:
            changed = False
            for cid, cat in self.categories.items():
                if cat["parent_id"] in found and cid not in found:
                    found.add(cid)
                    changed = True
        return found

    def visible(self) -> list[Product]:
        return [p for p in self.products.values() if p.is_published]

    def ordered(self, items: list[Product], field: str, descending: bool) -> list[Product]:
        return sorted(items, key=lambda p: p.sort_key(field), reverse=descending)

    def published_with_variants(self) -> list[Product]:
        return [p for p in self.visible() if p.variants]

    def unpublished(self) -> list[Product]:
        return [p for p in self.products.values() if not p.is_published]


async def load_catalog(db: Database) -> Catalog:
    async with db.read() as conn:
        prods = {
            row.id: Product(
                id=row.id,
                name=row.name,
                slug=row.slug,
                description=row.description,
                is_published=row.is_published,
                category_id=row.category_id,
                created_at=row.created_at,
            )
            for row in (await conn.execute(sa.select(products))).all()
        }
        for row in (await conn.execute(sa.select(variants).order_by(variants.c.id))).all():
            prods[row.product_id].variants.append(dict(row._mapping))
        for row in (
            await conn.execute(sa.select(images).order_by(images.c.product_id, images.c.position))
        ).all():
            prods[row.product_id].images.append(dict(row._mapping))
        for row in (await conn.execute(sa.select(collection_products))).all():
            prods[row.product_id].collection_ids.add(row.collection_id)
        cats = {
            row.id: dict(row._mapping) for row in (await conn.execute(sa.select(categories))).all()
        }
        cols = {
            row.id: dict(row._mapping) for row in (await conn.execute(sa.select(collections))).all()
        }
    return Catalog(prods, cats, cols)
