"""`shopql import-products FILE.csv`: create or update products and variants from a CSV file.

Format: UTF-8 (a BOM is fine), comma-separated, a header row, one row per variant. The rows
of one product are consecutive and share its `product_slug`.

    product_slug   required  lower-case letters, digits, single hyphens (at most 255)
    product_name   required on a product's first row (at most 250 characters)
    description    optional  at most 10,000 characters (newlines allowed)
    category_slug  optional  slug of an existing category; blank: no category
    is_published   optional  true/false, yes/no, 1/0; blank: false
    image_urls     optional  absolute http(s) URLs separated by "|" (at most 50), in order
    sku            required  unique, no spaces (at most 64)
    variant_name   optional  at most 250 characters
    price          required  a decimal in the shop currency, e.g. 19.99 (no more decimals
                             than the currency has, not negative)
    quantity       optional  stock, a whole number >= 0; blank: 0

Product columns (name, description, category, published, images) are read from a
product's first row; on its later rows they must be blank or the same.

Existing products and variants are updated (upsert): a `product_slug` that exists takes
the file's values, and so does an existing `sku` of the same product (a SKU that belongs
to another product is an error). Optional columns missing from the header are left alone
on existing rows; `image_urls`, when present, replaces a product's images.

All or nothing for mistakes: the file is first validated in full (streamed, row by row;
the SKU and category checks against the database run per chunk), and every problem is
reported as "row N: column: message" (row 1 is the header, as in a spreadsheet). If there
is any, nothing is written and the command exits 1. Otherwise a second streamed pass
writes the rows in batched transactions (default 2,000 rows each). A failure during the
write pass (the database went away, a concurrent edit took a SKU) leaves earlier batches
written; being an upsert, running the same file again finishes the job.

Stock: every batch records a VARIANT_STOCK_CHANGED event naming its variants (published
after the batch commits). No audit entries: the import has no signed-in actor.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from models.catalog import admin as w
from models.catalog.queries import refresh_product_prices
from models.catalog.tables import categories, products, variants
from models.db import Database, utcnow
from models.events import VARIANT_STOCK_CHANGED, record_event
from models.money import MAX_MINOR_UNITS, exponent

COLUMNS = (
    "product_slug",
    "product_name",
    "description",
    "category_slug",
    "is_published",
    "image_urls",
    "sku",
    "variant_name",
    "price",
    "quantity",
)
REQUIRED_COLUMNS = ("product_slug", "product_name", "sku", "price")
PRODUCT_COLUMNS = ("product_name", "description", "category_slug", "is_published", "image_urls")
BATCH_ROWS = 2_000
CHECK_ROWS = 1_000  # rows per database check during validation
MAX_REPORTED = 200
MAX_IMAGES = w.MAX_IMAGES
MAX_QUANTITY = 2**31 - 1
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f]")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}


class ImportFileError(Exception):
    """The file cannot be read as an import at all (missing, bad header, not UTF-8)."""


@dataclass(slots=True)
class VariantRow:
    row: int
    sku: str
    name: str
    price: int
    quantity: int


@dataclass(slots=True)
class ProductGroup:
    row: int  # the product's first row
    slug: str
    values: dict[str, Any]  # name, description, is_published (those the header has)
    category_slug: str | None
    images: list[str] | None  # None: the header has no image_urls column
    variants: list[VariantRow] = field(default_factory=list)


@dataclass
class ImportReport:
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    products_created: int = 0
    products_updated: int = 0
    variants_created: int = 0
    variants_updated: int = 0

    def error(self, row: int, column: str | None, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(
                f"row {row}: {column}: {message}" if column else f"row {row}: {message}"
            )


# --------------------------------------------------------------------------- parsing


def _text(
    value: str, limit: int, report: ImportReport, row: int, column: str, *, multiline: bool = False
) -> str:
    text = value.strip()
    if len(text) > limit:
        report.error(row, column, f"at most {limit} characters")
    elif (_CONTROL if multiline else _CONTROL_LINE).search(text):
        report.error(row, column, "contains control characters")
    return text


def _url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return (
        0 < len(value) <= w.MAX_URL
        and parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not _CONTROL_LINE.search(value)
        and " " not in value
    )


def _price(value: str, currency: str, report: ImportReport, row: int) -> int:
    text = value.strip()
    try:
        amount = Decimal(text)
        if not text or not amount.is_finite() or amount < 0:
            raise InvalidOperation
    except InvalidOperation:
        report.error(row, "price", f"{text[:40]!r} is not a non-negative amount")
        return 0
    scaled = amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        report.error(row, "price", f"{currency} amounts have at most {exponent(currency)} decimals")
        return 0
    if scaled > MAX_MINOR_UNITS:
        report.error(row, "price", "this amount is too large")
        return 0
    return int(scaled)


def _quantity(value: str, report: ImportReport, row: int) -> int:
    text = value.strip()
    if not text:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > MAX_QUANTITY:
        report.error(row, "quantity", "a quantity is a whole number, zero or more")
        return 0
    return int(text)


def _product(
    record: dict[str, str], header: Sequence[str], report: ImportReport, row: int
) -> ProductGroup:
    slug = record["product_slug"].strip()
    if not _SLUG.match(slug) or len(slug) > w.MAX_SLUG:
        report.error(row, "product_slug", "lower-case letters, digits and single hyphens")
    name = _text(record["product_name"], w.NAME_LIMIT, report, row, "product_name")
    if not name:
        report.error(row, "product_name", "required on a product's first row")
    values: dict[str, Any] = {"name": name}
    if "description" in header:
        values["description"] = _text(
            record["description"], w.DESCRIPTION_LIMIT, report, row, "description", multiline=True
        )
    if "is_published" in header:
        flag = record["is_published"].strip().lower()
        if flag not in _TRUE | _FALSE:
            report.error(row, "is_published", "use true or false")
        values["is_published"] = flag in _TRUE
    category_slug = None
    if "category_slug" in header:
        category_slug = record["category_slug"].strip() or None
        if category_slug is not None and not _SLUG.match(category_slug):
            report.error(row, "category_slug", "not a slug")
    found_images: list[str] | None = None
    if "image_urls" in header:
        found_images = [u.strip() for u in record["image_urls"].split("|") if u.strip()]
        if len(found_images) > MAX_IMAGES:
            report.error(row, "image_urls", f"at most {MAX_IMAGES} images")
        for url in found_images:
            if not _url(url):
                report.error(row, "image_urls", f"{url[:60]!r} is not an absolute http(s) URL")
    return ProductGroup(row, slug, values, category_slug, found_images)


def _variant(record: dict[str, str], currency: str, report: ImportReport, row: int) -> VariantRow:
    sku = _text(record["sku"], w.SKU_LIMIT, report, row, "sku")
    if not sku:
        report.error(row, "sku", "required")
    elif any(ch.isspace() for ch in sku):
        report.error(row, "sku", "a SKU has no spaces")
    name = _text(record.get("variant_name") or "", w.NAME_LIMIT, report, row, "variant_name")
    price = _price(record["price"], currency, report, row)
    quantity = _quantity(record.get("quantity") or "", report, row)
    return VariantRow(row, sku, name, price, quantity)


def _read_header(reader: Any) -> list[str]:
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ImportFileError("the file is empty (a header row is required)") from None
    except UnicodeDecodeError:
        raise ImportFileError("the header is not valid UTF-8") from None
    except csv.Error as exc:
        raise ImportFileError(f"unreadable header ({exc})") from None
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise ImportFileError(f"unknown columns {unknown}; the columns are {list(COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImportFileError(f"missing required columns {missing}")
    if len(set(header)) != len(header):
        raise ImportFileError("a column appears twice in the header")
    return header


def read_groups(
    stream: Iterator[str], currency: str, report: ImportReport, *, check_repeats: bool = True
) -> Iterator[ProductGroup]:
    """Products with their variants, one at a time, from a CSV stream; problems go to
    `report`. The file is never held in memory (the seen slugs and SKUs are)."""
    reader = csv.reader(stream)
    header = _read_header(reader)
    seen_slugs: set[str] = set()
    seen_skus: dict[str, int] = {}
    current: ProductGroup | None = None
    row = 1
    try:
        for cells in reader:
            row += 1
            if not any(c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(header):
                report.error(row, None, f"{len(cells)} cells, the header has {len(header)}")
                continue
            record = dict(zip(header, cells, strict=True))
            report.rows += 1
            slug = record["product_slug"].strip()
            if current is None or slug != current.slug:
                if current is not None:
                    yield current
                current = _product(record, header, report, row)
                if check_repeats and slug in seen_slugs:
                    report.error(row, "product_slug", "this product's rows must be consecutive")
                seen_slugs.add(slug)
            else:
                for column in PRODUCT_COLUMNS:
                    if column in header and record[column].strip():
                        first = _product(record, header, ImportReport(), row)
                        if _differs(first, current, column):
                            report.error(
                                row,
                                column,
                                f"differs from row {current.row}, the product's first row",
                            )
            variant = _variant(record, currency, report, row)
            if variant.sku:
                if check_repeats and variant.sku in seen_skus:
                    report.error(row, "sku", f"also on row {seen_skus[variant.sku]}")
                seen_skus.setdefault(variant.sku, row)
            current.variants.append(variant)
    except csv.Error as exc:
        report.error(row + 1, None, f"unreadable CSV ({exc})")
        return
    except UnicodeDecodeError:
        report.error(row + 1, None, "the file is not valid UTF-8")
        return
    if current is not None:
        yield current


def _differs(row_product: ProductGroup, first: ProductGroup, column: str) -> bool:
    if column == "product_name":
        return bool(row_product.values["name"] != first.values["name"])
    if column == "description":
        return bool(row_product.values.get("description") != first.values.get("description"))
    if column == "is_published":
        return bool(row_product.values.get("is_published") != first.values.get("is_published"))
    if column == "category_slug":
        return row_product.category_slug != first.category_slug
    return row_product.images != first.images


def _batches(groups: Iterator[ProductGroup], rows: int) -> Iterator[list[ProductGroup]]:
    batch: list[ProductGroup] = []
    size = 0
    for group in groups:
        batch.append(group)
        size += len(group.variants)
        if size >= rows:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# --------------------------------------------------------------------------- database


async def _category_ids(conn: AsyncConnection, slugs: set[str], known: dict[str, int]) -> None:
    """Add the ids of `slugs` not yet in `known` (unknown ones stay out)."""
    wanted = [s for s in slugs if s not in known]
    if wanted:
        known.update(await w.slug_holders(conn, categories, wanted))


async def _check(
    conn: AsyncConnection, groups: list[ProductGroup], known: dict[str, int], report: ImportReport
) -> None:
    """Categories exist; existing SKUs belong to the product of the row."""
    await _category_ids(conn, {g.category_slug for g in groups if g.category_slug}, known)
    for g in groups:
        if g.category_slug and g.category_slug not in known:
            report.error(g.row, "category_slug", f"no category has the slug {g.category_slug!r}")
    skus = [v.sku for g in groups for v in g.variants if v.sku]
    owners: dict[str, str] = {}
    for part in w.chunks(sorted(set(skus)), 500):
        stmt = (
            sa.select(variants.c.sku, products.c.slug)
            .join(products, products.c.id == variants.c.product_id)
            .where(variants.c.sku.in_(part))
        )
        owners.update((row[0], row[1]) for row in await conn.execute(stmt))
    for g in groups:
        for v in g.variants:
            owner = owners.get(v.sku)
            if owner is not None and owner != g.slug:
                report.error(v.row, "sku", f"{v.sku!r} belongs to the product {owner!r}")


async def _write(
    conn: AsyncConnection,
    groups: list[ProductGroup],
    *,
    currency: str,
    category_ids: dict[str, int],
    header_has: set[str],
    report: ImportReport,
) -> None:
    """Upsert one batch: a handful of set-based statements, whatever its size."""
    existing = await w.slug_holders(conn, products, [g.slug for g in groups])
    fresh = [g for g in groups if g.slug not in existing]
    old = [g for g in groups if g.slug in existing]

    def columns(g: ProductGroup) -> dict[str, Any]:
        values = dict(g.values)
        if "category_slug" in header_has:
            values["category_id"] = category_ids.get(g.category_slug or "")
        return values

    new_ids = await w.insert_products(
        conn,
        rows=[
            {
                "description": "",
                "is_published": False,
                "category_id": None,
                **columns(g),
                "slug": g.slug,
                "currency": currency,
            }
            for g in fresh
        ],
    )
    ids = dict(existing) | dict(zip([g.slug for g in fresh], new_ids, strict=True))
    if old:
        names = sorted(columns(old[0]))
        stmt = (
            products.update()
            .where(products.c.id == sa.bindparam("b_id"))
            .values({n: sa.bindparam(f"b_{n}") for n in names} | {"updated_at": utcnow()})
        )
        await conn.execute(
            stmt,
            [{"b_id": ids[g.slug]} | {f"b_{n}": v for n, v in columns(g).items()} for g in old],
        )
    if "image_urls" in header_has:
        await w.replace_images(
            conn,
            by_product={ids[g.slug]: [(url, "") for url in g.images or []] for g in groups},
        )
    pairs = [(ids[g.slug], v) for g in groups for v in g.variants]
    known = await w.sku_holders(conn, [v.sku for _pid, v in pairs])
    has_quantity = "quantity" in header_has
    inserted = await w.insert_variants(
        conn,
        rows=[
            {
                "product_id": pid,
                "sku": v.sku,
                "name": v.name,
                "price_amount": v.price,
                "currency": currency,
                "quantity": v.quantity,
            }
            for pid, v in pairs
            if v.sku not in known
        ],
    )
    updates = [(known[v.sku], v) for _pid, v in pairs if v.sku in known]
    if updates:
        values: dict[str, Any] = {
            "name": sa.bindparam("b_name"),
            "price_amount": sa.bindparam("b_price"),
            "updated_at": utcnow(),
        }
        if has_quantity:
            values["quantity"] = sa.bindparam("b_quantity")
        stmt = variants.update().where(variants.c.id == sa.bindparam("b_id")).values(values)
        await conn.execute(
            stmt,
            [
                {"b_id": vid, "b_name": v.name, "b_price": v.price, "b_quantity": v.quantity}
                for vid, v in updates
            ],
        )
    await refresh_product_prices(conn, product_ids=sorted(set(ids.values())))
    if has_quantity or inserted:
        changed = inserted + [vid for vid, _v in updates] if has_quantity else inserted
        record_event(conn, VARIANT_STOCK_CHANGED, {"variant_ids": changed})
    report.products_created += len(fresh)
    report.products_updated += len(old)
    report.variants_created += len(inserted)
    report.variants_updated += len(updates)


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None


def _lines(stream: BinaryIO) -> Iterator[str]:
    """Decoded lines, one at a time (a UTF-8 error surfaces at its own row; a newline
    byte never occurs inside a multi-byte UTF-8 character). A leading BOM is dropped."""
    for number, line in enumerate(stream):
        yield (line[3:] if number == 0 and line.startswith(codecs.BOM_UTF8) else line).decode()


async def import_products(
    db: Database,
    path: Path,
    *,
    currency: str,
    batch_rows: int = BATCH_ROWS,
    progress: bool = False,
) -> ImportReport:
    """Validate the whole file, then (only if it has no problem) write it in batches."""
    report = ImportReport()
    known_categories: dict[str, int] = {}
    with _open(path) as stream:
        bar = tqdm(unit="row", desc="check", file=sys.stderr, disable=not progress)
        async with db.read() as conn:
            for batch in _batches(read_groups(_lines(stream), currency, report), CHECK_ROWS):
                await _check(conn, batch, known_categories, report)
                bar.update(sum(len(g.variants) for g in batch))
        bar.close()
    if report.error_count:
        return report
    with _open(path) as stream:
        header_has = set(_read_header(csv.reader(_lines(stream))))
    with _open(path) as stream:
        quiet = ImportReport()  # already validated
        bar = tqdm(
            total=report.rows, unit="row", desc="import", file=sys.stderr, disable=not progress
        )
        for batch in _batches(
            read_groups(_lines(stream), currency, quiet, check_repeats=False), batch_rows
        ):
            async with db.transaction() as conn:
                await _category_ids(
                    conn, {g.category_slug for g in batch if g.category_slug}, known_categories
                )
                await _write(
                    conn,
                    batch,
                    currency=currency,
                    category_ids=known_categories,
                    header_has=header_has,
                    report=report,
                )
            bar.update(sum(len(g.variants) for g in batch))
        bar.close()
    return report


def run_cli(database_url: str, file: str, *, currency: str, batch_rows: int = BATCH_ROWS) -> int:
    """The `shopql import-products` command: 0 done, 1 problems in the file (nothing
    written), 2 the file cannot be imported at all."""
    if not 1 <= batch_rows <= 100_000:
        print("shopql: --batch-size must be between 1 and 100000", file=sys.stderr)
        return 2

    async def run() -> ImportReport:
        db = Database(database_url)
        try:
            return await import_products(
                db,
                Path(file),
                currency=currency,
                batch_rows=batch_rows,
                progress=sys.stderr.isatty(),
            )
        finally:
            await db.dispose()

    try:
        report = asyncio.run(run())
    except ImportFileError as exc:
        print(f"shopql: {exc}", file=sys.stderr)
        return 2
    if report.error_count:
        for line in report.errors:
            print(line, file=sys.stderr)
        if report.error_count > len(report.errors):
            print(f"... and {report.error_count - len(report.errors)} more", file=sys.stderr)
        print(
            f"shopql: {report.error_count} problems in {file}; nothing was imported.",
            file=sys.stderr,
        )
        return 1
    print(
        f"Imported {report.rows} rows: {report.products_created} products created, "
        f"{report.products_updated} updated; {report.variants_created} variants created, "
        f"{report.variants_updated} updated.",
        file=sys.stderr,
    )
    return 0
