"""Catalog writes for the staff API and the CSV importer. Keyword-only, caller's transaction.

Set-based throughout: many rows go in with one multi-row INSERT (`executemany`, or
`INSERT ... RETURNING` in parameter order) and many stock changes with one conditional
UPDATE. A unique-key race surfaces as `Taken` (raised out of the transaction, which
rolls back; on PostgreSQL the failed statement has aborted it anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.catalog.queries import VARIANT_COLUMNS, VariantRecord, subtree
from models.catalog.tables import (
    categories,
    collection_products,
    collections,
    images,
    products,
    variants,
)
from models.db import insert_ignoring_conflicts, utcnow

T = TypeVar("T")
SLUG_CANDIDATES = 10  # base, base-2 ... base-10 looked up at once; more is rare
# Input limits (within the column sizes of models.catalog.tables).
NAME_LIMIT = 250
DESCRIPTION_LIMIT = 10_000
SKU_LIMIT = 64
ALT_LIMIT = 250
MAX_SLUG = 255
MAX_URL = 2048
MAX_IMAGES = 50


class Taken(Exception):
    """A unique key (slug or SKU) another row holds; `what` names it ("slug", "sku")."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _what(exc: sa.exc.IntegrityError) -> str:
    text = str(exc.orig).lower()
    return "sku" if "sku" in text else "slug"


# --------------------------------------------------------------------------- unique keys


async def existing_values(
    conn: AsyncConnection, column: sa.Column[Any], values: Iterable[str]
) -> set[str]:
    """Which of `values` some row of `column`'s table holds already."""
    wanted = sorted(set(values))
    found: set[str] = set()
    for part in chunks(wanted, 500):
        rows = await conn.execute(sa.select(column).where(column.in_(part)))
        found.update(row[0] for row in rows)
    return found


async def slug_holders(
    conn: AsyncConnection, table: sa.Table, slugs: Iterable[str]
) -> dict[str, int]:
    """{slug: id of the row holding it} for the given slugs that are taken."""
    wanted = sorted(set(slugs))
    found: dict[str, int] = {}
    for part in chunks(wanted, 500):
        rows = await conn.execute(sa.select(table.c.slug, table.c.id).where(table.c.slug.in_(part)))
        found.update((row[0], int(row[1])) for row in rows)
    return found


async def free_slugs(
    conn: AsyncConnection, table: sa.Table, bases: Sequence[str], *, reserved: Iterable[str] = ()
) -> list[str]:
    """A free slug for each base: the base itself, else base-2, base-3 ... distinct from the
    table's slugs, from `reserved` and from each other (in order)."""
    column = table.c.slug
    candidates = [
        base if n == 1 else f"{base}-{n}"
        for base in set(bases)
        for n in range(1, SLUG_CANDIDATES + 1)
    ]
    taken = await existing_values(conn, column, candidates)
    taken.update(reserved)
    crowded = {
        base
        for base in set(bases)
        if all((base if n == 1 else f"{base}-{n}") in taken for n in range(1, SLUG_CANDIDATES + 1))
    }
    for base in sorted(crowded):  # rare: every candidate is taken; look at the whole family
        rows = await conn.execute(sa.select(column).where(column.like(f"{base}-%")))
        taken.update(row[0] for row in rows)
    result: list[str] = []
    for base in bases:
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug)
        result.append(slug)
    return result


# --------------------------------------------------------------------------- products


async def insert_products(conn: AsyncConnection, *, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert products (name, slug, description, is_published, category_id, currency); their
    ids in the order given. One executemany, then one lookup by the (unique) slugs: RETURNING
    in parameter order would fall back to a statement per row on SQLite."""
    if not rows:
        return []
    now = utcnow()
    values = [
        {"created_at": now, "updated_at": now, "price_min": 0, "price_max": 0, **r} for r in rows
    ]
    try:
        await conn.execute(products.insert(), values)
    except sa.exc.IntegrityError as exc:
        raise Taken(_what(exc)) from None
    ids = await slug_holders(conn, products, [r["slug"] for r in rows])
    return [ids[r["slug"]] for r in rows]


async def update_product(
    conn: AsyncConnection, *, product_id: int, values: Mapping[str, Any]
) -> None:
    try:
        await conn.execute(
            products.update()
            .where(products.c.id == product_id)
            .values({**values, "updated_at": utcnow()})
        )
    except sa.exc.IntegrityError as exc:
        raise Taken(_what(exc)) from None


async def product_exists(conn: AsyncConnection, *, product_id: int) -> str | None:
    """The product's currency, or None when there is no such product."""
    row = (
        await conn.execute(sa.select(products.c.currency).where(products.c.id == product_id))
    ).first()
    return None if row is None else str(row[0])


async def delete_product(conn: AsyncConnection, *, product_id: int) -> bool:
    """Delete a product with its variants, images and collection links. Order lines keep
    their snapshots (their variant_id becomes NULL); checkout lines of it go."""
    result = await conn.execute(products.delete().where(products.c.id == product_id))
    return bool(result.rowcount)


async def replace_images(
    conn: AsyncConnection, *, by_product: Mapping[int, Sequence[tuple[str, str]]]
) -> None:
    """Set the ordered (url, alt) images of each product, replacing what it had."""
    if not by_product:
        return
    for part in chunks(list(by_product), 500):
        await conn.execute(images.delete().where(images.c.product_id.in_(part)))
    rows = [
        {"product_id": pid, "position": i, "url": url, "alt": alt}
        for pid, found in by_product.items()
        for i, (url, alt) in enumerate(found)
    ]
    if rows:
        await conn.execute(images.insert(), rows)


async def existing_ids(conn: AsyncConnection, table: sa.Table, ids: Iterable[int]) -> set[int]:
    wanted = sorted(set(ids))
    found: set[int] = set()
    for part in chunks(wanted, 500):
        rows = await conn.execute(sa.select(table.c.id).where(table.c.id.in_(part)))
        found.update(int(row[0]) for row in rows)
    return found


# --------------------------------------------------------------------------- variants


async def insert_variants(conn: AsyncConnection, *, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert variants (product_id, sku, name, price_amount, currency, quantity); their ids
    in the order given (looked up by the unique SKUs)."""
    if not rows:
        return []
    now = utcnow()
    values = [{"created_at": now, "updated_at": now, **r} for r in rows]
    try:
        await conn.execute(variants.insert(), values)
    except sa.exc.IntegrityError as exc:
        raise Taken(_what(exc)) from None
    ids = await sku_holders(conn, [r["sku"] for r in rows])
    return [ids[r["sku"]] for r in rows]


async def sku_holders(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, int]:
    """{sku: variant id} for the given SKUs that exist."""
    wanted = sorted(set(skus))
    found: dict[str, int] = {}
    for part in chunks(wanted, 500):
        stmt = sa.select(variants.c.sku, variants.c.id).where(variants.c.sku.in_(part))
        found.update((row[0], int(row[1])) for row in await conn.execute(stmt))
    return found


async def variant_by_id(conn: AsyncConnection, *, variant_id: int) -> VariantRecord | None:
    row = (
        await conn.execute(sa.select(*VARIANT_COLUMNS).where(variants.c.id == variant_id))
    ).first()
    return VariantRecord(*row) if row is not None else None


async def update_variant(
    conn: AsyncConnection, *, variant_id: int, values: Mapping[str, Any]
) -> None:
    try:
        await conn.execute(
            variants.update()
            .where(variants.c.id == variant_id)
            .values({**values, "updated_at": utcnow()})
        )
    except sa.exc.IntegrityError as exc:
        raise Taken(_what(exc)) from None


async def delete_variant(conn: AsyncConnection, *, variant_id: int) -> int | None:
    """Delete a variant; its product's id, or None when there was no such variant."""
    row = (
        await conn.execute(
            variants.delete().where(variants.c.id == variant_id).returning(variants.c.product_id)
        )
    ).first()
    return None if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class StockChange:
    variant_id: int
    quantity: int
    expected: int | None = None


@dataclass(frozen=True, slots=True)
class StockResult:
    updated: dict[int, int]  # variant id -> product id, for the rows that changed
    missing: set[int]  # no such variant
    stale: set[int]  # expected quantity did not match


async def set_stock(conn: AsyncConnection, *, changes: Sequence[StockChange]) -> StockResult:
    """Set the quantity of many variants in ONE conditional UPDATE: a change with an
    expected quantity applies only if the stored quantity still equals it (compare-and-
    set). The caller rolls back unless every change applied."""
    if not changes:
        return StockResult({}, set(), set())
    ids = [c.variant_id for c in changes]
    new_quantity = sa.case({c.variant_id: c.quantity for c in changes}, value=variants.c.id)
    guarded = [c for c in changes if c.expected is not None]
    conds: list[Any] = [variants.c.id.in_(ids)]
    if guarded:
        expected = sa.case({c.variant_id: c.expected for c in guarded}, value=variants.c.id)
        conds.append(
            sa.or_(
                variants.c.id.not_in([c.variant_id for c in guarded]),
                variants.c.quantity == expected,
            )
        )
    stmt = (
        variants.update()
        .where(*conds)
        .values(quantity=new_quantity, updated_at=utcnow())
        .returning(variants.c.id, variants.c.product_id)
    )
    updated = {int(row[0]): int(row[1]) for row in (await conn.execute(stmt)).all()}
    missing: set[int] = set()
    stale: set[int] = set()
    if len(updated) < len(set(ids)):
        left = [i for i in ids if i not in updated]
        present = await existing_ids(conn, variants, left)
        missing = set(left) - present
        stale = present
    return StockResult(updated, missing, stale)


# --------------------------------------------------------------------------- categories


async def insert_category(conn: AsyncConnection, *, values: Mapping[str, Any]) -> int:
    now = utcnow()
    try:
        result = await conn.execute(
            categories.insert()
            .values({"created_at": now, "updated_at": now, **values})
            .returning(categories.c.id)
        )
    except sa.exc.IntegrityError:
        raise Taken("slug") from None
    return int(result.scalar_one())


async def category_level(conn: AsyncConnection, *, category_id: int) -> int | None:
    row = (
        await conn.execute(sa.select(categories.c.level).where(categories.c.id == category_id))
    ).first()
    return None if row is None else int(row[0])


async def subtree_ids(conn: AsyncConnection, *, category_id: int) -> set[int]:
    """The category and all its descendants."""
    tree = subtree([category_id])
    return {int(row[0]) for row in await conn.execute(sa.select(tree.c.id))}


async def update_category(
    conn: AsyncConnection, *, category_id: int, values: Mapping[str, Any], level_shift: int = 0
) -> None:
    """Update a category; `level_shift` moves its whole subtree's levels (after a move)."""
    try:
        await conn.execute(
            categories.update()
            .where(categories.c.id == category_id)
            .values({**values, "updated_at": utcnow()})
        )
    except sa.exc.IntegrityError:
        raise Taken("slug") from None
    if level_shift:
        ids = sorted(await subtree_ids(conn, category_id=category_id))
        for part in chunks(ids, 500):
            await conn.execute(
                categories.update()
                .where(categories.c.id.in_(part))
                .values(level=categories.c.level + level_shift)
            )


async def delete_category(conn: AsyncConnection, *, category_id: int) -> bool:
    """Delete a category and its subcategories; their products become uncategorised."""
    result = await conn.execute(categories.delete().where(categories.c.id == category_id))
    return bool(result.rowcount)


# --------------------------------------------------------------------------- collections


async def insert_collection(conn: AsyncConnection, *, values: Mapping[str, Any]) -> int:
    now = utcnow()
    try:
        result = await conn.execute(
            collections.insert()
            .values({"created_at": now, "updated_at": now, **values})
            .returning(collections.c.id)
        )
    except sa.exc.IntegrityError:
        raise Taken("slug") from None
    return int(result.scalar_one())


async def update_collection(
    conn: AsyncConnection, *, collection_id: int, values: Mapping[str, Any]
) -> None:
    try:
        await conn.execute(
            collections.update()
            .where(collections.c.id == collection_id)
            .values({**values, "updated_at": utcnow()})
        )
    except sa.exc.IntegrityError:
        raise Taken("slug") from None


async def delete_collection(conn: AsyncConnection, *, collection_id: int) -> bool:
    result = await conn.execute(collections.delete().where(collections.c.id == collection_id))
    return bool(result.rowcount)


async def add_to_collection(
    conn: AsyncConnection, *, collection_id: int, product_ids: Sequence[int], dialect: str
) -> None:
    """Link products; already linked ones are left alone (idempotent)."""
    if product_ids:
        rows = [{"collection_id": collection_id, "product_id": p} for p in sorted(set(product_ids))]
        await conn.execute(insert_ignoring_conflicts(collection_products, dialect), rows)


async def remove_from_collection(
    conn: AsyncConnection, *, collection_id: int, product_ids: Sequence[int]
) -> int:
    if not product_ids:
        return 0
    result = await conn.execute(
        collection_products.delete().where(
            collection_products.c.collection_id == collection_id,
            collection_products.c.product_id.in_(sorted(set(product_ids))),
        )
    )
    return int(result.rowcount)


async def touch(conn: AsyncConnection, table: sa.Table, *, ids: Sequence[int]) -> None:
    """Bump `updated_at` of rows whose related rows changed."""
    if ids:
        await conn.execute(table.update().where(table.c.id.in_(ids)).values(updated_at=utcnow()))
