"""The GraphQL schema: per-domain root types merged once here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from schema.accounts import AccountMutation, AccountQuery, Address, User
from schema.catalog import CatalogQuery, Category, Collection, Product, ProductVariant
from schema.checkout import Checkout, CheckoutMutation, CheckoutQuery, ShippingMethod
from schema.node import NodeQuery
from schema.orders import Order, OrderQuery, Payment
from schema.scalars import DECIMAL_SCALAR
from schema.staff import AuditEntry, StaffMutation, StaffQuery

Query = merge_types(
    "Query", (NodeQuery, CatalogQuery, AccountQuery, CheckoutQuery, OrderQuery, StaffQuery)
)
Mutation = merge_types("Mutation", (AccountMutation, CheckoutMutation, StaffMutation))


class ShopSchema(strawberry.Schema):
    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        """Errors are logged where they are formatted (schema.http), with request IDs."""


def build_schema(*, debug: bool = False) -> strawberry.Schema:
    return ShopSchema(
        query=Query,
        mutation=Mutation,
        types=[
            Product,
            ProductVariant,
            Category,
            Collection,
            User,
            Address,
            Checkout,
            Order,
            Payment,
            ShippingMethod,
            AuditEntry,
        ],
        config=StrawberryConfig(
            disable_field_suggestions=not debug, scalar_map={Decimal: DECIMAL_SCALAR}
        ),
    )


def export_sdl() -> str:
    return build_schema(debug=True).as_str() + "\n"
