"""Catalog tables. Every invariant the code relies on is a constraint here.

Queries use the Core tables (`Product.__table__`) and return light records, so the hot
read path never pays for ORM instrumentation.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import NameType, timestamp_column, utcnow

_ts = timestamp_column


class Category(SQLModel, table=True):
    __tablename__ = "categories"
    __table_args__ = (
        sa.CheckConstraint("level >= 0", name="ck_categories_level"),
        sa.Index("ix_categories_parent_name", "parent_id", "name", "id"),
        sa.Index("ix_categories_level_name", "level", "name", "id"),
        sa.Index("ix_categories_name", "name", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("categories.id", ondelete="CASCADE")),
    )
    name: str = Field(sa_column=sa.Column(NameType, nullable=False))
    slug: str = Field(sa_column=sa.Column(sa.String(255), nullable=False, unique=True))
    description: str = Field(
        default="", sa_column=sa.Column(sa.Text, nullable=False, server_default="")
    )
    level: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Product(SQLModel, table=True):
    __tablename__ = "products"
    __table_args__ = (
        sa.CheckConstraint("price_min >= 0 AND price_max >= price_min", name="ck_products_prices"),
        sa.Index("ix_products_created", "created_at", "id"),
        sa.Index("ix_products_name", "name", "id"),
        sa.Index("ix_products_price", "price_min", "id"),
        sa.Index("ix_products_category", "category_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(NameType, nullable=False))
    slug: str = Field(sa_column=sa.Column(sa.String(255), nullable=False, unique=True))
    description: str = Field(
        default="", sa_column=sa.Column(sa.Text, nullable=False, server_default="")
    )
    is_published: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    category_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("categories.id", ondelete="SET NULL")),
    )
    # Denormalised from the variants (kept in step by models.catalog.refresh_product_prices)
    # so PRICE sorting and priceRange need no aggregate per row.
    price_min: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    price_max: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ProductVariant(SQLModel, table=True):
    __tablename__ = "product_variants"
    __table_args__ = (
        sa.CheckConstraint("quantity >= 0", name="ck_variants_quantity"),
        sa.CheckConstraint("price_amount >= 0", name="ck_variants_price"),
        sa.Index("ix_variants_product", "product_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False
        )
    )
    sku: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    name: str = Field(default="", sa_column=sa.Column(sa.String(250), nullable=False))
    price_amount: int = Field(
        sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    currency: str = Field(sa_column=sa.Column(sa.String(3), nullable=False))
    quantity: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ProductImage(SQLModel, table=True):
    __tablename__ = "product_images"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "position", name="uq_images_position"),
        sa.CheckConstraint("position >= 0", name="ck_images_position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False
        )
    )
    position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    url: str = Field(sa_column=sa.Column(sa.String(2048), nullable=False))
    alt: str = Field(default="", sa_column=sa.Column(sa.String(250), nullable=False))


class Collection(SQLModel, table=True):
    __tablename__ = "collections"
    __table_args__ = (sa.Index("ix_collections_name", "name", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(NameType, nullable=False))
    slug: str = Field(sa_column=sa.Column(sa.String(255), nullable=False, unique=True))
    description: str = Field(
        default="", sa_column=sa.Column(sa.Text, nullable=False, server_default="")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class CollectionProduct(SQLModel, table=True):
    __tablename__ = "collection_products"
    __table_args__ = (sa.Index("ix_collection_products_product", "product_id", "collection_id"),)

    collection_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    product_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("products.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )


categories: sa.Table = Category.__table__  # type: ignore[attr-defined]
products: sa.Table = Product.__table__  # type: ignore[attr-defined]
variants: sa.Table = ProductVariant.__table__  # type: ignore[attr-defined]
images: sa.Table = ProductImage.__table__  # type: ignore[attr-defined]
collections: sa.Table = Collection.__table__  # type: ignore[attr-defined]
collection_products: sa.Table = CollectionProduct.__table__  # type: ignore[attr-defined]
