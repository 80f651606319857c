"""Catalog administration (MANAGE_PRODUCTS): products, variants, stock, categories,
collections, and the bulk product and stock mutations.

Every resolver gates on the permission first, validates all input into `Problem`s before
it writes, and makes its change, the audit entry and any stock event in one transaction.
A problem found inside the transaction (an unknown category, a taken slug, a stale
expected quantity) raises `_Abort`, which rolls everything back; the payload lists it.
Afterwards the request's catalog loaders are dropped, so the payload and any later field
of the same request read the new state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from models.audit.queries import record_audit, record_audit_many
from models.catalog import admin as w
from models.catalog import queries as q
from models.catalog.admin import StockChange, Taken
from models.catalog.queries import (
    CategoryRecord,
    CollectionRecord,
    ProductRecord,
    VariantRecord,
    refresh_product_prices,
)
from models.catalog.tables import categories, collections, products, variants
from models.errors import Problem
from models.events import VARIANT_STOCK_CHANGED, record_event
from resolvers.admin import (
    Result,
    clean_slug,
    clean_text,
    clean_url,
    decode_id,
    delete_audited,
    fail,
    slugify,
    to_minor_units,
)
from resolvers.context import Context

logger = logging.getLogger("shopql.catalog_admin")

PERMISSION = "MANAGE_PRODUCTS"
NAME_LIMIT = w.NAME_LIMIT
DESCRIPTION_LIMIT = w.DESCRIPTION_LIMIT
SKU_LIMIT = w.SKU_LIMIT
ALT_LIMIT = w.ALT_LIMIT
MAX_IMAGES = w.MAX_IMAGES
MAX_BULK = 100
MAX_BULK_VARIANTS = 100
MAX_COLLECTION_PRODUCTS = 100
MAX_QUANTITY = 2**31 - 1


class _Abort(Exception):
    """Problems found inside a transaction: roll it back and report them."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems


def _fresh(ctx: Context) -> None:
    """Drop this request's catalog loaders: what they cached predates the write."""
    ctx.__dict__.pop("catalog", None)


def _given(value: Any) -> bool:
    """An optional ID argument the client sent, as an ID or as null. Absent ones hold the
    schema's UNSET sentinel, which is neither a string nor None."""
    return value is None or isinstance(value, str)


# --------------------------------------------------------------------------- inputs


class ImageInput(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def alt(self) -> str | None: ...


class ProductInput(Protocol):
    """ProductCreateInput / ProductUpdateInput (name optional on update)."""

    @property
    def name(self) -> str | None: ...
    @property
    def slug(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def category_id(self) -> Any: ...  # ID, null (no category) or UNSET
    @property
    def is_published(self) -> bool | None: ...
    @property
    def images(self) -> Sequence[ImageInput] | None: ...


class BulkVariantInput(Protocol):
    @property
    def sku(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def quantity(self) -> int | None: ...


class BulkProductInput(ProductInput, Protocol):
    @property
    def variants(self) -> Sequence[BulkVariantInput] | None: ...


class VariantCreateInput(Protocol):
    @property
    def product_id(self) -> str: ...
    @property
    def sku(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def quantity(self) -> int | None: ...


class VariantUpdateInput(Protocol):
    @property
    def sku(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def price(self) -> Decimal | None: ...


class StockUpdateInput(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def expected_quantity(self) -> int | None: ...


class CategoryInput(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def slug(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def parent_id(self) -> Any: ...  # ID, null (a top-level category) or UNSET


class CollectionInput(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def slug(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...


# --------------------------------------------------------------------------- validation


@dataclass
class _ProductDraft:
    path: str  # "input" or "inputs.3"
    values: dict[str, Any] = field(default_factory=dict)  # product columns
    slug: str | None = None  # explicit slug
    base: str = "product"  # slug base when none is given
    images: list[tuple[str, str]] | None = None
    changed: list[str] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)


def _product_draft(
    data: ProductInput, path: str, problems: list[Problem], *, creating: bool
) -> _ProductDraft:
    draft = _ProductDraft(path)
    if creating or data.name is not None:
        name = clean_text(data.name, f"{path}.name", problems, limit=NAME_LIMIT, required=True)
        if name:
            draft.values["name"] = name
            draft.base = slugify(name) or "product"
            draft.changed.append("name")
    if data.slug is not None:
        draft.slug = clean_slug(data.slug, f"{path}.slug", problems)
        draft.changed.append("slug")
    if data.description is not None:
        draft.values["description"] = clean_text(
            data.description,
            f"{path}.description",
            problems,
            limit=DESCRIPTION_LIMIT,
            multiline=True,
        )
        draft.changed.append("description")
    if _given(data.category_id) and not (creating and data.category_id is None):
        if data.category_id is None:
            draft.values["category_id"] = None
        else:
            key = decode_id(data.category_id, "Category", f"{path}.categoryId", problems)
            draft.values["category_id"] = key
        draft.changed.append("categoryId")
    if data.is_published is not None:
        draft.values["is_published"] = data.is_published
        draft.changed.append("isPublished")
    if data.images is not None:
        draft.images = _images(data.images, f"{path}.images", problems)
        draft.changed.append("images")
    return draft


def _images(
    given: Sequence[ImageInput], path: str, problems: list[Problem]
) -> list[tuple[str, str]]:
    if len(given) > MAX_IMAGES:
        problems.append(Problem("LIMIT_EXCEEDED", f"at most {MAX_IMAGES} images", path))
        return []
    found: list[tuple[str, str]] = []
    for i, image in enumerate(given):
        before = len(problems)
        raw = clean_text(image.url, f"{path}.{i}.url", problems, limit=w.MAX_URL, required=True)
        url = clean_url(raw or "", f"{path}.{i}.url", problems) if len(problems) == before else None
        alt = clean_text(image.alt, f"{path}.{i}.alt", problems, limit=ALT_LIMIT) or ""
        if url is not None:
            found.append((url, alt))
    return found


def _sku(value: str, path: str, problems: list[Problem]) -> str | None:
    sku = clean_text(value, path, problems, limit=SKU_LIMIT, required=True)
    if sku and any(ch.isspace() for ch in sku):
        problems.append(Problem("INVALID", "a SKU has no spaces", path))
        return None
    return sku or None


def _quantity(value: int | None, path: str, problems: list[Problem]) -> int | None:
    if value is not None and not 0 <= value <= MAX_QUANTITY:
        problems.append(Problem("INVALID", "a quantity is zero or more", path))
        return None
    return value


def _variant_values(
    data: BulkVariantInput | VariantCreateInput,
    path: str,
    currency: str,
    problems: list[Problem],
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sku": _sku(data.sku, f"{path}.sku", problems),
        "name": clean_text(data.name, f"{path}.name", problems, limit=NAME_LIMIT) or "",
        "price_amount": to_minor_units(data.price, currency, f"{path}.price", problems),
        "currency": currency,
        "quantity": _quantity(data.quantity, f"{path}.quantity", problems) or 0,
    }
    return values


async def _check_product_refs(
    conn: AsyncConnection,
    drafts: Sequence[_ProductDraft],
    problems: list[Problem],
    *,
    product_id: int | None = None,
) -> None:
    """Categories exist; explicit slugs are free (also within the batch); SKUs are free
    (also within the batch). One query each, whatever the batch size."""
    wanted = {d.values["category_id"] for d in drafts if d.values.get("category_id")}
    known = await w.existing_ids(conn, categories, wanted)
    holders = await w.slug_holders(conn, products, [d.slug for d in drafts if d.slug])
    slugs = {slug for slug, holder in holders.items() if holder != product_id}
    skus = await w.existing_values(
        conn, variants.c.sku, [v["sku"] for d in drafts for v in d.variants]
    )
    seen_slugs: set[str] = set()
    seen_skus: set[str] = set()
    for d in drafts:
        category_id = d.values.get("category_id")
        if category_id and category_id not in known:
            problems.append(Problem("NOT_FOUND", "no category has this ID", f"{d.path}.categoryId"))
        if d.slug:
            if d.slug in slugs or d.slug in seen_slugs:
                problems.append(
                    Problem("UNIQUE", "another product has this slug", f"{d.path}.slug")
                )
            seen_slugs.add(d.slug)
        for i, v in enumerate(d.variants):
            if v["sku"] in skus or v["sku"] in seen_skus:
                problems.append(
                    Problem("UNIQUE", "another variant has this SKU", f"{d.path}.variants.{i}.sku")
                )
            seen_skus.add(v["sku"])


async def _products(conn: AsyncConnection, ids: Sequence[int]) -> list[ProductRecord]:
    found = await q.products_by_ids(conn, ids=ids, published_only=False)
    return [found[i] for i in ids if i in found]


async def _variant(conn: AsyncConnection, variant_id: int) -> VariantRecord | None:
    found = await q.variants_by_ids(conn, ids=[variant_id], published_only=False)
    return found.get(variant_id)


# --------------------------------------------------------------------------- products


async def _create_products(
    ctx: Context, conn: AsyncConnection, drafts: Sequence[_ProductDraft]
) -> list[int]:
    """Write validated drafts (products, images, variants, prices, stock event)."""
    explicit = [d.slug for d in drafts if d.slug]
    auto = await w.free_slugs(
        conn, products, [d.base for d in drafts if not d.slug], reserved=explicit
    )
    slugs = iter(auto)
    rows = [
        {
            "description": "",
            "is_published": False,
            "category_id": None,
            **d.values,
            "slug": d.slug or next(slugs),
            "currency": ctx.settings.currency,
        }
        for d in drafts
    ]
    ids = await w.insert_products(conn, rows=rows)
    await w.replace_images(
        conn, by_product={pid: d.images for pid, d in zip(ids, drafts, strict=True) if d.images}
    )
    variant_rows = [
        {**v, "product_id": pid} for pid, d in zip(ids, drafts, strict=True) for v in d.variants
    ]
    variant_ids = await w.insert_variants(conn, rows=variant_rows)
    if variant_rows:
        await refresh_product_prices(conn, product_ids=ids)
        record_event(conn, VARIANT_STOCK_CHANGED, {"variant_ids": variant_ids})
    return ids


async def product_create(ctx: Context, data: ProductInput) -> Result[ProductRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    draft = _product_draft(data, "input", problems, creating=True)
    if problems:
        return Result(None, problems)
    try:
        async with ctx.db.transaction() as conn:
            await _check_product_refs(conn, [draft], problems)
            if problems:
                raise _Abort(problems)
            [product_id] = await _create_products(ctx, conn, [draft])
            await record_audit(
                conn,
                actor=viewer,
                action="productCreate",
                object_type="Product",
                object_key=product_id,
                changed=draft.changed,
            )
            [product] = await _products(conn, [product_id])
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another product has this slug", "input.slug")
    _fresh(ctx)
    return Result(product)


async def product_update(ctx: Context, gid: str, data: ProductInput) -> Result[ProductRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    product_id = decode_id(gid, "Product", "id", problems)
    draft = _product_draft(data, "input", problems, creating=False)
    if problems:
        return Result(None, problems)
    assert product_id is not None
    try:
        async with ctx.db.transaction() as conn:
            if not await w.existing_ids(conn, products, [product_id]):
                raise _Abort([Problem("NOT_FOUND", "no product has this ID", "id")])
            await _check_product_refs(conn, [draft], problems, product_id=product_id)
            if problems:
                raise _Abort(problems)
            values = dict(draft.values)
            if draft.slug:
                values["slug"] = draft.slug
            await w.update_product(conn, product_id=product_id, values=values)
            if draft.images is not None:
                await w.replace_images(conn, by_product={product_id: draft.images})
            if draft.changed:
                await record_audit(
                    conn,
                    actor=viewer,
                    action="productUpdate",
                    object_type="Product",
                    object_key=product_id,
                    changed=draft.changed,
                )
            [product] = await _products(conn, [product_id])
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another product has this slug", "input.slug")
    _fresh(ctx)
    return Result(product)


async def product_delete(ctx: Context, gid: str) -> Result[str]:
    """Delete a product, its variants and images. Orders keep their line snapshots."""

    async def delete(conn: AsyncConnection, product_id: int) -> bool:
        return await w.delete_product(conn, product_id=product_id)

    result = await delete_audited(
        ctx, gid, permission=PERMISSION, type_name="Product", noun="product",
        action="productDelete", delete=delete,
    )  # fmt: skip
    if result.value is not None:
        _fresh(ctx)
        logger.info("product deleted: %s by user_id=%s", gid, getattr(ctx.viewer, "id", None))
    return result


@dataclass
class BulkResult:
    products: list[ProductRecord]
    errors: list[Problem]


async def product_bulk_create(ctx: Context, inputs: Sequence[BulkProductInput]) -> BulkResult:
    """Up to 100 products with their variants, all or nothing. Errors name the item:
    `inputs.3.variants.0.sku`."""
    viewer = ctx.require_permission(PERMISSION)
    if len(inputs) > MAX_BULK:
        problem = Problem("LIMIT_EXCEEDED", f"at most {MAX_BULK} products at once", "inputs")
        return BulkResult([], [problem])
    problems: list[Problem] = []
    drafts: list[_ProductDraft] = []
    currency = ctx.settings.currency
    for i, data in enumerate(inputs):
        draft = _product_draft(data, f"inputs.{i}", problems, creating=True)
        given = data.variants or []
        if len(given) > MAX_BULK_VARIANTS:
            problems.append(
                Problem(
                    "LIMIT_EXCEEDED",
                    f"at most {MAX_BULK_VARIANTS} variants per product",
                    f"inputs.{i}.variants",
                )
            )
            given = []
        for j, variant in enumerate(given):
            draft.variants.append(
                _variant_values(variant, f"inputs.{i}.variants.{j}", currency, problems)
            )
        if data.variants is not None:
            draft.changed.append("variants")
        drafts.append(draft)
    if problems:
        return BulkResult([], problems)
    try:
        async with ctx.db.transaction() as conn:
            await _check_product_refs(conn, drafts, problems)
            if problems:
                raise _Abort(problems)
            ids = await _create_products(ctx, conn, drafts)
            await record_audit_many(
                conn,
                actor=viewer,
                action="productBulkCreate",
                object_type="Product",
                entries=[(pid, d.changed) for pid, d in zip(ids, drafts, strict=True)],
            )
            created = await _products(conn, ids)
    except _Abort as exc:
        return BulkResult([], exc.problems)
    except Taken as exc:  # a concurrent writer took a key after our check
        what = "SKU" if exc.what == "sku" else "slug"
        return BulkResult([], [Problem("UNIQUE", f"a {what} was taken meanwhile", "inputs")])
    _fresh(ctx)
    return BulkResult(created, [])


# --------------------------------------------------------------------------- variants


async def variant_create(ctx: Context, data: VariantCreateInput) -> Result[VariantRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    product_id = decode_id(data.product_id, "Product", "input.productId", problems)
    values = _variant_values(data, "input", ctx.settings.currency, problems)
    if problems:
        return Result(None, problems)
    assert product_id is not None
    try:
        async with ctx.db.transaction() as conn:
            currency = await w.product_exists(conn, product_id=product_id)
            if currency is None:
                raise _Abort([Problem("NOT_FOUND", "no product has this ID", "input.productId")])
            if currency != values["currency"]:  # a product from before a currency change
                values = _variant_values(data, "input", currency, problems)
                if problems:
                    raise _Abort(problems)
            if await w.existing_values(conn, variants.c.sku, [values["sku"]]):
                raise _Abort([Problem("UNIQUE", "another variant has this SKU", "input.sku")])
            [variant_id] = await w.insert_variants(
                conn, rows=[{**values, "product_id": product_id}]
            )
            await refresh_product_prices(conn, product_ids=[product_id])
            changed = ["productId", "sku", "price"]
            changed += [
                n for n, v in (("name", data.name), ("quantity", data.quantity)) if v is not None
            ]
            await record_audit(
                conn,
                actor=viewer,
                action="productVariantCreate",
                object_type="ProductVariant",
                object_key=variant_id,
                changed=changed,
            )
            if data.quantity is not None:
                record_event(conn, VARIANT_STOCK_CHANGED, {"variant_ids": [variant_id]})
            variant = await _variant(conn, variant_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another variant has this SKU", "input.sku")
    _fresh(ctx)
    return Result(variant)


async def variant_update(ctx: Context, gid: str, data: VariantUpdateInput) -> Result[VariantRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    variant_id = decode_id(gid, "ProductVariant", "id", problems)
    values: dict[str, Any] = {}
    changed: list[str] = []
    if data.sku is not None:
        values["sku"] = _sku(data.sku, "input.sku", problems)
        changed.append("sku")
    if data.name is not None:
        values["name"] = clean_text(data.name, "input.name", problems, limit=NAME_LIMIT)
        changed.append("name")
    if problems:
        return Result(None, problems)
    assert variant_id is not None
    try:
        async with ctx.db.transaction() as conn:
            variant = await w.variant_by_id(conn, variant_id=variant_id)
            if variant is None:
                raise _Abort([Problem("NOT_FOUND", "no variant has this ID", "id")])
            if data.price is not None:
                values["price_amount"] = to_minor_units(
                    data.price, variant.currency, "input.price", problems
                )
                changed.append("price")
            sku = values.get("sku")
            if sku and sku != variant.sku and await w.existing_values(conn, variants.c.sku, [sku]):
                problems.append(Problem("UNIQUE", "another variant has this SKU", "input.sku"))
            if problems:
                raise _Abort(problems)
            if values:
                await w.update_variant(conn, variant_id=variant_id, values=values)
                await refresh_product_prices(conn, product_ids=[variant.product_id])
                await record_audit(
                    conn,
                    actor=viewer,
                    action="productVariantUpdate",
                    object_type="ProductVariant",
                    object_key=variant_id,
                    changed=changed,
                )
            updated = await _variant(conn, variant_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another variant has this SKU", "input.sku")
    _fresh(ctx)
    return Result(updated)


async def variant_delete(ctx: Context, gid: str) -> Result[str]:
    """Delete a variant. Order lines keep their snapshots; their `variant` becomes null."""

    async def delete(conn: AsyncConnection, variant_id: int) -> bool:
        product_id = await w.delete_variant(conn, variant_id=variant_id)
        if product_id is None:
            return False
        await refresh_product_prices(conn, product_ids=[product_id])
        return True

    result = await delete_audited(
        ctx, gid, permission=PERMISSION, type_name="ProductVariant", noun="variant",
        action="productVariantDelete", delete=delete,
    )  # fmt: skip
    if result.value is not None:
        _fresh(ctx)
    return result


# --------------------------------------------------------------------------- stock


def _stock_change(
    gid: str, quantity: int, expected: int | None, path: str, problems: list[Problem]
) -> StockChange | None:
    prefix = f"{path}." if path else ""
    variant_id = decode_id(gid, "ProductVariant", f"{prefix}id", problems)
    _quantity(quantity, f"{prefix}quantity", problems)
    _quantity(expected, f"{prefix}expectedQuantity", problems)
    if variant_id is None or problems:
        return None
    return StockChange(variant_id, quantity, expected)


async def _apply_stock(
    ctx: Context,
    viewer: Any,
    changes: Sequence[StockChange],
    paths: Sequence[str],
    action: str,
) -> list[VariantRecord]:
    """Compare-and-set every change in one statement; raise _Abort (rolling back) unless
    all applied."""
    async with ctx.db.transaction() as conn:
        outcome = await w.set_stock(conn, changes=changes)
        problems: list[Problem] = []
        for change, path in zip(changes, paths, strict=True):
            prefix = f"{path}." if path else ""
            if change.variant_id in outcome.missing:
                problems.append(Problem("NOT_FOUND", "no variant has this ID", f"{prefix}id"))
            elif change.variant_id in outcome.stale:
                problems.append(
                    Problem(
                        "CONFLICT",
                        "the stock changed since you read it; nothing was changed",
                        f"{prefix}expectedQuantity",
                    )
                )
        if problems:
            raise _Abort(problems)
        ids = [c.variant_id for c in changes]
        await record_audit_many(
            conn,
            actor=viewer,
            action=action,
            object_type="ProductVariant",
            entries=[(i, ["quantity"]) for i in ids],
        )
        record_event(conn, VARIANT_STOCK_CHANGED, {"variant_ids": ids})
        found = await q.variants_by_ids(conn, ids=ids, published_only=False)
    _fresh(ctx)
    return [found[i] for i in ids if i in found]


async def variant_stock_update(
    ctx: Context, gid: str, quantity: int, expected: int | None
) -> Result[VariantRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    change = _stock_change(gid, quantity, expected, "", problems)
    if change is None:
        return Result(None, problems)
    try:
        [variant] = await _apply_stock(ctx, viewer, [change], [""], "variantStockUpdate")
    except _Abort as exc:
        return Result(None, exc.problems)
    return Result(variant)


async def variant_stock_bulk_update(
    ctx: Context, updates: Sequence[StockUpdateInput]
) -> Result[list[VariantRecord]]:
    viewer = ctx.require_permission(PERMISSION)
    if len(updates) > MAX_BULK:
        return fail("LIMIT_EXCEEDED", f"at most {MAX_BULK} updates at once", "updates")
    problems: list[Problem] = []
    changes: list[StockChange] = []
    seen: set[int] = set()
    for i, u in enumerate(updates):
        found: list[Problem] = []
        change = _stock_change(u.id, u.quantity, u.expected_quantity, f"updates.{i}", found)
        problems += found
        if change is not None:
            if change.variant_id in seen:
                problems.append(
                    Problem("INVALID", "this variant is listed twice", f"updates.{i}.id")
                )
            seen.add(change.variant_id)
            changes.append(change)
    if problems:
        return Result(None, problems)
    paths = [f"updates.{i}" for i in range(len(changes))]
    try:
        return Result(await _apply_stock(ctx, viewer, changes, paths, "variantStockBulkUpdate"))
    except _Abort as exc:
        return Result(None, exc.problems)


# --------------------------------------------------------------------------- categories


def _named_fields(
    data: CategoryInput | CollectionInput, problems: list[Problem], *, creating: bool
) -> tuple[dict[str, Any], str | None, str, list[str]]:
    """(column values, explicit slug, slug base, changed input fields) of name, slug and
    description."""
    values: dict[str, Any] = {}
    changed: list[str] = []
    slug: str | None = None
    base = ""
    if creating or data.name is not None:
        name = clean_text(data.name, "input.name", problems, limit=NAME_LIMIT, required=True)
        if name:
            values["name"] = name
            base = slugify(name)
            changed.append("name")
    if data.slug is not None:
        slug = clean_slug(data.slug, "input.slug", problems)
        changed.append("slug")
    if data.description is not None:
        values["description"] = clean_text(
            data.description, "input.description", problems, limit=DESCRIPTION_LIMIT, multiline=True
        )
        changed.append("description")
    return values, slug, base, changed


async def _slug_for(
    conn: AsyncConnection,
    table: Any,
    slug: str | None,
    base: str,
    noun: str,
    own_id: int | None = None,
) -> str:
    """The explicit slug (raising _Abort when another row holds it), else a free one."""
    if slug is None:
        return (await w.free_slugs(conn, table, [base or noun]))[0]
    holder = (await w.slug_holders(conn, table, [slug])).get(slug)
    if holder is not None and holder != own_id:
        raise _Abort([Problem("UNIQUE", f"another {noun} has this slug", "input.slug")])
    return slug


async def _category(conn: AsyncConnection, category_id: int) -> CategoryRecord:
    return (await q.categories_by_ids(conn, ids=[category_id]))[category_id]


async def category_create(ctx: Context, data: CategoryInput) -> Result[CategoryRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    values, slug, base, changed = _named_fields(data, problems, creating=True)
    parent_id = None
    if isinstance(data.parent_id, str):
        parent_id = decode_id(data.parent_id, "Category", "input.parentId", problems)
        changed.append("parentId")
    if problems:
        return Result(None, problems)
    try:
        async with ctx.db.transaction() as conn:
            level = 0
            if parent_id is not None:
                parent_level = await w.category_level(conn, category_id=parent_id)
                if parent_level is None:
                    raise _Abort(
                        [Problem("NOT_FOUND", "no category has this ID", "input.parentId")]
                    )
                level = parent_level + 1
            values["slug"] = await _slug_for(conn, categories, slug, base, "category")
            category_id = await w.insert_category(
                conn, values={**values, "parent_id": parent_id, "level": level}
            )
            await record_audit(
                conn,
                actor=viewer,
                action="categoryCreate",
                object_type="Category",
                object_key=category_id,
                changed=changed,
            )
            category = await _category(conn, category_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another category has this slug", "input.slug")
    _fresh(ctx)
    return Result(category)


async def category_update(ctx: Context, gid: str, data: CategoryInput) -> Result[CategoryRecord]:
    """Rename, re-slug, describe or move a category (with its subtree: levels follow).
    Moving it under itself or one of its descendants is refused."""
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    category_id = decode_id(gid, "Category", "id", problems)
    values, slug, _base, changed = _named_fields(data, problems, creating=False)
    moving = _given(data.parent_id)
    parent_id = None
    if isinstance(data.parent_id, str):
        parent_id = decode_id(data.parent_id, "Category", "input.parentId", problems)
    if moving:
        changed.append("parentId")
    if problems:
        return Result(None, problems)
    assert category_id is not None
    try:
        async with ctx.db.transaction() as conn:
            level = await w.category_level(conn, category_id=category_id)
            if level is None:
                raise _Abort([Problem("NOT_FOUND", "no category has this ID", "id")])
            shift = 0
            if moving:
                new_level = 0
                if parent_id is not None:
                    parent_level = await w.category_level(conn, category_id=parent_id)
                    if parent_level is None:
                        raise _Abort(
                            [Problem("NOT_FOUND", "no category has this ID", "input.parentId")]
                        )
                    if parent_id in await w.subtree_ids(conn, category_id=category_id):
                        raise _Abort(
                            [
                                Problem(
                                    "INVALID",
                                    "a category cannot move under itself or its descendants",
                                    "input.parentId",
                                )
                            ]
                        )
                    new_level = parent_level + 1
                values["parent_id"] = parent_id
                shift = new_level - level
            if slug is not None:
                values["slug"] = await _slug_for(
                    conn, categories, slug, "", "category", own_id=category_id
                )
            await w.update_category(conn, category_id=category_id, values=values, level_shift=shift)
            if changed:
                await record_audit(
                    conn,
                    actor=viewer,
                    action="categoryUpdate",
                    object_type="Category",
                    object_key=category_id,
                    changed=changed,
                )
            category = await _category(conn, category_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another category has this slug", "input.slug")
    _fresh(ctx)
    return Result(category)


async def category_delete(ctx: Context, gid: str) -> Result[str]:
    """Delete a category and its subcategories; their products become uncategorised."""

    async def delete(conn: AsyncConnection, category_id: int) -> bool:
        return await w.delete_category(conn, category_id=category_id)

    result = await delete_audited(
        ctx, gid, permission=PERMISSION, type_name="Category", noun="category",
        action="categoryDelete", delete=delete,
    )  # fmt: skip
    if result.value is not None:
        _fresh(ctx)
    return result


# --------------------------------------------------------------------------- collections


async def _collection(conn: AsyncConnection, collection_id: int) -> CollectionRecord:
    return (await q.collections_by_ids(conn, ids=[collection_id]))[collection_id]


async def collection_create(ctx: Context, data: CollectionInput) -> Result[CollectionRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    values, slug, base, changed = _named_fields(data, problems, creating=True)
    if problems:
        return Result(None, problems)
    try:
        async with ctx.db.transaction() as conn:
            values["slug"] = await _slug_for(conn, collections, slug, base, "collection")
            collection_id = await w.insert_collection(conn, values=values)
            await record_audit(
                conn,
                actor=viewer,
                action="collectionCreate",
                object_type="Collection",
                object_key=collection_id,
                changed=changed,
            )
            collection = await _collection(conn, collection_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another collection has this slug", "input.slug")
    _fresh(ctx)
    return Result(collection)


async def collection_update(
    ctx: Context, gid: str, data: CollectionInput
) -> Result[CollectionRecord]:
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    collection_id = decode_id(gid, "Collection", "id", problems)
    values, slug, _base, changed = _named_fields(data, problems, creating=False)
    if problems:
        return Result(None, problems)
    assert collection_id is not None
    try:
        async with ctx.db.transaction() as conn:
            if not await w.existing_ids(conn, collections, [collection_id]):
                raise _Abort([Problem("NOT_FOUND", "no collection has this ID", "id")])
            if slug is not None:
                values["slug"] = await _slug_for(
                    conn, collections, slug, "", "collection", own_id=collection_id
                )
            await w.update_collection(conn, collection_id=collection_id, values=values)
            if changed:
                await record_audit(
                    conn,
                    actor=viewer,
                    action="collectionUpdate",
                    object_type="Collection",
                    object_key=collection_id,
                    changed=changed,
                )
            collection = await _collection(conn, collection_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    except Taken:
        return fail("UNIQUE", "another collection has this slug", "input.slug")
    _fresh(ctx)
    return Result(collection)


async def collection_delete(ctx: Context, gid: str) -> Result[str]:
    """Delete a collection (its products stay)."""

    async def delete(conn: AsyncConnection, collection_id: int) -> bool:
        return await w.delete_collection(conn, collection_id=collection_id)

    result = await delete_audited(
        ctx, gid, permission=PERMISSION, type_name="Collection", noun="collection",
        action="collectionDelete", delete=delete,
    )  # fmt: skip
    if result.value is not None:
        _fresh(ctx)
    return result


async def collection_products_change(
    ctx: Context, gid: str, product_gids: Sequence[str], *, add: bool
) -> Result[CollectionRecord]:
    """Add products to (idempotent) or remove them from a collection."""
    viewer = ctx.require_permission(PERMISSION)
    problems: list[Problem] = []
    collection_id = decode_id(gid, "Collection", "collectionId", problems)
    if len(product_gids) > MAX_COLLECTION_PRODUCTS:
        problems.append(
            Problem(
                "LIMIT_EXCEEDED",
                f"at most {MAX_COLLECTION_PRODUCTS} products at once",
                "productIds",
            )
        )
        product_gids = []
    keys = [
        decode_id(p, "Product", f"productIds.{i}", problems) for i, p in enumerate(product_gids)
    ]
    if problems:
        return Result(None, problems)
    assert collection_id is not None
    product_ids = [k for k in keys if k is not None]
    action = "collectionAddProducts" if add else "collectionRemoveProducts"
    try:
        async with ctx.db.transaction() as conn:
            if not await w.existing_ids(conn, collections, [collection_id]):
                raise _Abort([Problem("NOT_FOUND", "no collection has this ID", "collectionId")])
            known = await w.existing_ids(conn, products, product_ids)
            missing = [
                Problem("NOT_FOUND", "no product has this ID", f"productIds.{i}")
                for i, k in enumerate(product_ids)
                if k not in known
            ]
            if missing:
                raise _Abort(missing)
            if add:
                await w.add_to_collection(
                    conn,
                    collection_id=collection_id,
                    product_ids=product_ids,
                    dialect=ctx.db.dialect,
                )
            else:
                await w.remove_from_collection(
                    conn, collection_id=collection_id, product_ids=product_ids
                )
            await record_audit(
                conn,
                actor=viewer,
                action=action,
                object_type="Collection",
                object_key=collection_id,
                changed=["productIds"],
            )
            collection = await _collection(conn, collection_id)
    except _Abort as exc:
        return Result(None, exc.problems)
    _fresh(ctx)
    return Result(collection)
