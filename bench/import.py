"""Time `shopql import-products` on a generated CSV (default 100,000 rows) into a fresh
SQLite database: `python bench/import.py [ROWS] [--database-url URL]`.

Target: 100,000 rows in under 2 minutes on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import tempfile
import time
from pathlib import Path

from models.catalog.importer import COLUMNS, import_products
from models.db import Database
from models.migrate import upgrade


def generate(path: Path, rows: int, per_product: int = 3) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(rows):
            p = i // per_product
            writer.writerow(
                [f"bench-{p}", f"Bench Product {p}", f"Generated product number {p}.", "",
                 "true", f"https://cdn.example.com/{p}/a.jpg|https://cdn.example.com/{p}/b.jpg",
                 f"BENCH-{i}", f"Size {i % per_product}", f"{(i % 90) + 1}.99", str(i % 9)]
            )  # fmt: skip


async def run(rows: int, url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "products.csv"
        generate(path, rows)
        db = Database(url or f"sqlite+aiosqlite:///{tmp}/bench.db")
        try:
            await upgrade(db)
            for label in ("create", "upsert"):
                started = time.perf_counter()
                report = await import_products(db, path, currency="USD", progress=True)
                elapsed = time.perf_counter() - started
                assert report.error_count == 0, report.errors[:5]
                print(
                    f"{label}: {rows:,} rows in {elapsed:.1f}s ({rows / elapsed:,.0f} rows/s); "
                    f"products +{report.products_created} ~{report.products_updated}, "
                    f"variants +{report.variants_created} ~{report.variants_updated}"
                )
        finally:
            await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=int, nargs="?", default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.database_url))


if __name__ == "__main__":
    main()
