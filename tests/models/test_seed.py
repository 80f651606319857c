"""The demo catalog seeder: deterministic, well-formed and refusing to overwrite data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.catalog.tables import categories
from models.db import Database
from models.migrate import upgrade
from models.seed import SeedError, SeedSummary, catalog_is_empty, seed_catalog

PRODUCTS = 300
TABLES = {
    "categories": "id",
    "products": "id",
    "product_variants": "id",
    "product_images": "id",
    "collections": "id",
    "collection_products": "collection_id, product_id",
}

MakeDb = Callable[[str], Awaitable[Database]]


@pytest.fixture
async def make_db(tmp_path: Path) -> AsyncIterator[MakeDb]:
    """Fresh migrated SQLite databases, all disposed at teardown."""
    made: list[Database] = []

    async def make(name: str) -> Database:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/{name}.db")
        made.append(db)
        await upgrade(db)
        return db

    yield make
    for db in made:
        await db.dispose()


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    async with db.read() as conn:
        return {
            table: [
                tuple(row)
                for row in await conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))
            ]
            for table, order in TABLES.items()
        }


async def rows(db: Database, sql: str) -> list[sa.Row[Any]]:
    async with db.read() as conn:
        return list(await conn.execute(sa.text(sql)))


async def test_same_seed_gives_identical_catalog(make_db: MakeDb) -> None:
    first, second, other = await make_db("a"), await make_db("b"), await make_db("c")
    summary = await seed_catalog(first, products=PRODUCTS, seed=7)
    assert await seed_catalog(second, products=PRODUCTS, seed=7) == summary
    await seed_catalog(other, products=PRODUCTS, seed=8)

    one, two, three = await snapshot(first), await snapshot(second), await snapshot(other)
    assert one == two
    assert one["products"] != three["products"]
    assert one["product_variants"] != three["product_variants"]
    assert summary == SeedSummary(
        categories=len(one["categories"]),
        products=PRODUCTS,
        variants=len(one["product_variants"]),
        images=len(one["product_images"]),
        collections=len(one["collections"]),
    )


async def test_catalog_is_well_formed(make_db: MakeDb) -> None:
    db = await make_db("a")
    assert await catalog_is_empty(db)
    summary = await seed_catalog(db, products=PRODUCTS, currency="EUR")
    assert not await catalog_is_empty(db)
    assert summary.products == PRODUCTS
    assert 80 <= summary.categories <= 120
    assert 6 <= summary.collections <= 8

    levels = {
        row.id: (row.level, row.parent_id) for row in await rows(db, "SELECT * FROM categories")
    }
    for level, parent in levels.values():
        if level == 0:
            assert parent is None
        else:
            assert levels[parent][0] == level - 1
    assert {level for level, _ in levels.values()} == {0, 1, 2}
    # every level-1 category has children, so the tree is exactly 3 deep everywhere
    parents = {parent for _, parent in levels.values()}
    assert all(cid in parents for cid, (level, _) in levels.items() if level < 2)

    products = await rows(db, "SELECT * FROM products")
    assert len(products) == PRODUCTS
    assert all(p.category_id in levels and levels[p.category_id][0] >= 1 for p in products)
    assert {levels[p.category_id][0] for p in products} == {1, 2}
    assert len({p.slug for p in products}) == PRODUCTS
    assert len({p.created_at for p in products}) == PRODUCTS
    assert {p.currency for p in products} == {"EUR"}
    assert 0 < sum(not p.is_published for p in products) < PRODUCTS * 0.15
    assert all(len(p.name.split()) >= 3 and p.description.endswith(".") for p in products)

    variants = await rows(db, "SELECT * FROM product_variants")
    assert len({v.sku for v in variants}) == len(variants) == summary.variants
    assert all(499 <= v.price_amount <= 49999 and v.currency == "EUR" for v in variants)
    by_product: dict[int, list[Any]] = {}
    for v in variants:
        by_product.setdefault(v.product_id, []).append(v)
    assert all(1 <= len(vs) <= 4 for vs in by_product.values())
    for p in products:
        prices = [v.price_amount for v in by_product[p.id]]
        assert (p.price_min, p.price_max) == (min(prices), max(prices))
    assert any(v.quantity == 0 for v in variants)
    assert any(all(v.quantity == 0 for v in vs) for vs in by_product.values())

    images = await rows(db, "SELECT * FROM product_images ORDER BY product_id, position")
    slugs = {p.id: p.slug for p in products}
    per_product: dict[int, list[int]] = {}
    for image in images:
        per_product.setdefault(image.product_id, []).append(image.position)
        assert image.url.endswith(f"/{slugs[image.product_id]}-{image.position}.jpg")
    assert len(per_product) == PRODUCTS
    assert all(positions == list(range(len(positions))) for positions in per_product.values())

    counts = await rows(
        db,
        "SELECT c.id, COUNT(cp.product_id) AS n FROM collections c "
        "LEFT JOIN collection_products cp ON cp.collection_id = c.id GROUP BY c.id",
    )
    assert all(row.n > 0 for row in counts)
    shared = await rows(
        db,
        "SELECT product_id FROM collection_products GROUP BY product_id HAVING COUNT(*) > 1",
    )
    assert len(shared) >= 2

    matches = await rows(db, "SELECT rowid FROM product_search WHERE product_search MATCH 'the'")
    assert matches  # the FTS trigger indexed the descriptions


async def test_refuses_non_empty_catalog(make_db: MakeDb) -> None:
    db = await make_db("a")
    await seed_catalog(db, products=PRODUCTS)
    before = await snapshot(db)
    with pytest.raises(SeedError, match="not empty"):
        await seed_catalog(db, products=PRODUCTS, seed=1)
    assert await snapshot(db) == before


async def test_refuses_when_only_categories_exist(make_db: MakeDb) -> None:
    db = await make_db("a")
    at = datetime(2025, 1, 1, tzinfo=UTC)
    async with db.transaction() as conn:
        await conn.execute(
            categories.insert(),
            [
                {
                    "name": "Misc",
                    "slug": "misc",
                    "description": "",
                    "level": 0,
                    "created_at": at,
                    "updated_at": at,
                }
            ],
        )
    assert not await catalog_is_empty(db)
    with pytest.raises(SeedError):
        await seed_catalog(db, products=10)
    assert [tuple(r) for r in await rows(db, "SELECT COUNT(*) FROM products")] == [(0,)]
    assert [r.slug for r in await rows(db, "SELECT slug FROM categories")] == ["misc"]
