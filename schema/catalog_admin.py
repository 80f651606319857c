"""Catalog administration (MANAGE_PRODUCTS): inputs, payloads and `CatalogAdminMutation`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import strawberry
from strawberry.types import Info

from models.errors import Problem
from resolvers import catalog_admin as r
from resolvers.context import Context
from schema.admin import StaffError, StaffErrorCode, staff_mutation
from schema.catalog import Category, Collection, Product, ProductVariant

Ctx = Info[Context, None]
P = "MANAGE_PRODUCTS"


# --------------------------------------------------------------------------- inputs


@strawberry.input
class ProductImageInput:
    url: str = strawberry.field(description="An absolute http(s) URL.")
    alt: str | None = None


@strawberry.input
class ProductCreateInput:
    name: str
    slug: str | None = strawberry.field(
        default=None,
        description="Lower-case letters, digits and hyphens. Default: from the name, made "
        "unique with -2, -3...",
    )
    description: str | None = None
    category_id: strawberry.ID | None = strawberry.UNSET
    is_published: bool | None = strawberry.field(default=None, description="Default false.")
    images: list[ProductImageInput] | None = strawberry.field(
        default=None, description="In display order; at most 50."
    )


@strawberry.input
class ProductUpdateInput:
    name: str | None = None
    slug: str | None = None
    description: str | None = None
    category_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="null removes the product from its category."
    )
    is_published: bool | None = None
    images: list[ProductImageInput] | None = strawberry.field(
        default=None, description="Replaces all the product's images (in this order)."
    )


@strawberry.input
class ProductVariantCreateInput:
    product_id: strawberry.ID
    sku: str
    name: str | None = None
    price: Decimal
    quantity: int | None = strawberry.field(default=None, description="Initial stock (>= 0).")


@strawberry.input
class ProductVariantUpdateInput:
    sku: str | None = None
    name: str | None = None
    price: Decimal | None = None


@strawberry.input
class ProductBulkVariantInput:
    sku: str
    name: str | None = None
    price: Decimal
    quantity: int | None = None


@strawberry.input(description="ProductCreateInput plus the product's variants.")
class ProductBulkCreateInput(ProductCreateInput):
    variants: list[ProductBulkVariantInput] | None = None


@strawberry.input
class VariantStockUpdateInput:
    id: strawberry.ID
    quantity: int
    expected_quantity: int | None = strawberry.field(
        default=None, description="Applies only if the stock still is this (compare-and-set)."
    )


@strawberry.input
class CategoryCreateInput:
    name: str
    slug: str | None = None
    description: str | None = None
    parent_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="Absent or null: a top-level category."
    )


@strawberry.input
class CategoryUpdateInput:
    name: str | None = None
    slug: str | None = None
    description: str | None = None
    parent_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description="Move the category (and its subtree); null makes it top-level.",
    )


@strawberry.input
class CollectionCreateInput:
    name: str
    slug: str | None = None
    description: str | None = None


@strawberry.input
class CollectionUpdateInput:
    name: str | None = None
    slug: str | None = None
    description: str | None = None


# --------------------------------------------------------------------------- payloads


def _code(root: strawberry.Parent[Problem]) -> StaffErrorCode:
    return StaffErrorCode(root.code)


def _index(root: strawberry.Parent[Problem]) -> int | None:
    parts = (root.field or "").split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


@strawberry.type(description="A payload error of a bulk mutation, naming the item.")
class CatalogBulkError:
    index: int | None = strawberry.field(
        resolver=_index, description="Position of the item in the list, or null for the call."
    )
    field: str | None = strawberry.field(
        description="camelCase input path, e.g. `inputs.3.variants.0.sku`"
    )
    code: StaffErrorCode = strawberry.field(resolver=_code)
    message: str


@strawberry.type
class ProductCreatePayload:
    product: Product | None
    errors: list[StaffError]


@strawberry.type
class ProductUpdatePayload:
    product: Product | None
    errors: list[StaffError]


@strawberry.type
class ProductDeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class ProductBulkCreatePayload:
    products: list[Product]
    count: int
    errors: list[CatalogBulkError]


@strawberry.type
class ProductVariantCreatePayload:
    product_variant: ProductVariant | None
    errors: list[StaffError]


@strawberry.type
class ProductVariantUpdatePayload:
    product_variant: ProductVariant | None
    errors: list[StaffError]


@strawberry.type
class ProductVariantDeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class VariantStockUpdatePayload:
    product_variant: ProductVariant | None
    errors: list[StaffError]


@strawberry.type
class VariantStockBulkUpdatePayload:
    product_variants: list[ProductVariant]
    count: int
    errors: list[CatalogBulkError]


@strawberry.type
class CategoryCreatePayload:
    category: Category | None
    errors: list[StaffError]


@strawberry.type
class CategoryUpdatePayload:
    category: Category | None
    errors: list[StaffError]


@strawberry.type
class CategoryDeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class CollectionCreatePayload:
    collection: Collection | None
    errors: list[StaffError]


@strawberry.type
class CollectionUpdatePayload:
    collection: Collection | None
    errors: list[StaffError]


@strawberry.type
class CollectionDeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[StaffError]


@strawberry.type
class CollectionAddProductsPayload:
    collection: Collection | None
    errors: list[StaffError]


@strawberry.type
class CollectionRemoveProductsPayload:
    collection: Collection | None
    errors: list[StaffError]


def _deleted(value: str | None) -> strawberry.ID | None:
    return strawberry.ID(value) if value else None


def _e(errors: list[Problem]) -> Any:
    return errors


# --------------------------------------------------------------------------- mutations


@strawberry.type
class CatalogAdminMutation:
    @staff_mutation(P, "A product (slug from the name unless given; unpublished by default).")
    async def product_create(self, info: Ctx, input: ProductCreateInput) -> ProductCreatePayload:
        result = await r.product_create(info.context, input)
        return ProductCreatePayload(product=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(P, "Change a product; only the given fields change.")
    async def product_update(
        self, info: Ctx, id: strawberry.ID, input: ProductUpdateInput
    ) -> ProductUpdatePayload:
        result = await r.product_update(info.context, id, input)
        return ProductUpdatePayload(product=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(
        P,
        "Delete a product with its variants and images. Orders keep their lines "
        "(name, SKU and price snapshots; `variant` becomes null).",
    )
    async def product_delete(self, info: Ctx, id: strawberry.ID) -> ProductDeletePayload:
        result = await r.product_delete(info.context, id)
        return ProductDeletePayload(deleted_id=_deleted(result.value), errors=_e(result.errors))

    @staff_mutation(
        P,
        "Up to 100 products with their variants in one transaction: all or nothing. "
        "Errors name the item (`index`, and `field` like `inputs.3.variants.0.sku`).",
    )
    async def product_bulk_create(
        self, info: Ctx, inputs: list[ProductBulkCreateInput]
    ) -> ProductBulkCreatePayload:
        result = await r.product_bulk_create(info.context, inputs)
        return ProductBulkCreatePayload(
            products=result.products,  # type: ignore[arg-type]
            count=len(result.products),
            errors=_e(result.errors),
        )

    @staff_mutation(P, "A variant of a product; SKUs are unique.")
    async def product_variant_create(
        self, info: Ctx, input: ProductVariantCreateInput
    ) -> ProductVariantCreatePayload:
        result = await r.variant_create(info.context, input)
        return ProductVariantCreatePayload(product_variant=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(P, "Change a variant's SKU, name or price.")
    async def product_variant_update(
        self, info: Ctx, id: strawberry.ID, input: ProductVariantUpdateInput
    ) -> ProductVariantUpdatePayload:
        result = await r.variant_update(info.context, id, input)
        return ProductVariantUpdatePayload(product_variant=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(
        P, "Delete a variant. Order lines keep their snapshots; their `variant` becomes null."
    )
    async def product_variant_delete(
        self, info: Ctx, id: strawberry.ID
    ) -> ProductVariantDeletePayload:
        result = await r.variant_delete(info.context, id)
        return ProductVariantDeletePayload(
            deleted_id=_deleted(result.value), errors=_e(result.errors)
        )

    @staff_mutation(
        P,
        "Set a variant's stock. With `expectedQuantity` it applies only if the stock still "
        "is that (else a CONFLICT error and nothing changes).",
    )
    async def variant_stock_update(
        self,
        info: Ctx,
        id: strawberry.ID,
        quantity: int,
        expected_quantity: int | None = None,
    ) -> VariantStockUpdatePayload:
        result = await r.variant_stock_update(info.context, id, quantity, expected_quantity)
        return VariantStockUpdatePayload(product_variant=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(
        P,
        "Set the stock of up to 100 variants at once, all or nothing; a stale "
        "`expectedQuantity` is a CONFLICT naming the item.",
    )
    async def variant_stock_bulk_update(
        self, info: Ctx, updates: list[VariantStockUpdateInput]
    ) -> VariantStockBulkUpdatePayload:
        result = await r.variant_stock_bulk_update(info.context, updates)
        found = result.value or []
        return VariantStockBulkUpdatePayload(
            product_variants=found,  # type: ignore[arg-type]
            count=len(found),
            errors=_e(result.errors),
        )

    @staff_mutation(P, "A category (top-level unless `parentId` is given).")
    async def category_create(self, info: Ctx, input: CategoryCreateInput) -> CategoryCreatePayload:
        result = await r.category_create(info.context, input)
        return CategoryCreatePayload(category=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(
        P,
        "Change or move a category (its subtree moves with it; not under itself or its "
        "descendants).",
    )
    async def category_update(
        self, info: Ctx, id: strawberry.ID, input: CategoryUpdateInput
    ) -> CategoryUpdatePayload:
        result = await r.category_update(info.context, id, input)
        return CategoryUpdatePayload(category=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(
        P, "Delete a category and its subcategories; their products become uncategorised."
    )
    async def category_delete(self, info: Ctx, id: strawberry.ID) -> CategoryDeletePayload:
        result = await r.category_delete(info.context, id)
        return CategoryDeletePayload(deleted_id=_deleted(result.value), errors=_e(result.errors))

    @staff_mutation(P, "A collection.")
    async def collection_create(
        self, info: Ctx, input: CollectionCreateInput
    ) -> CollectionCreatePayload:
        result = await r.collection_create(info.context, input)
        return CollectionCreatePayload(collection=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(P, "Change a collection.")
    async def collection_update(
        self, info: Ctx, id: strawberry.ID, input: CollectionUpdateInput
    ) -> CollectionUpdatePayload:
        result = await r.collection_update(info.context, id, input)
        return CollectionUpdatePayload(collection=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(P, "Delete a collection (its products stay).")
    async def collection_delete(self, info: Ctx, id: strawberry.ID) -> CollectionDeletePayload:
        result = await r.collection_delete(info.context, id)
        return CollectionDeletePayload(deleted_id=_deleted(result.value), errors=_e(result.errors))

    @staff_mutation(P, "Add up to 100 products to a collection (already there: no change).")
    async def collection_add_products(
        self, info: Ctx, collection_id: strawberry.ID, product_ids: list[strawberry.ID]
    ) -> CollectionAddProductsPayload:
        result = await r.collection_products_change(
            info.context, collection_id, product_ids, add=True
        )
        return CollectionAddProductsPayload(collection=result.value, errors=_e(result.errors))  # type: ignore[arg-type]

    @staff_mutation(P, "Remove up to 100 products from a collection.")
    async def collection_remove_products(
        self, info: Ctx, collection_id: strawberry.ID, product_ids: list[strawberry.ID]
    ) -> CollectionRemoveProductsPayload:
        result = await r.collection_products_change(
            info.context, collection_id, product_ids, add=False
        )
        return CollectionRemoveProductsPayload(collection=result.value, errors=_e(result.errors))  # type: ignore[arg-type]
