"""The GraphQL schema: per-domain root types merged once here."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from models.settings import QueryLimits, fast_execution_enabled
from schema.accounts import AccountMutation, AccountQuery, Address, User
from schema.catalog import CatalogQuery, Category, Collection, Product, ProductVariant
from schema.catalog_admin import CatalogAdminMutation
from schema.checkout import Checkout, CheckoutMutation, CheckoutQuery, ShippingMethod
from schema.document_cache import DocumentCache, DocumentStore
from schema.execution import (
    FastExecutionContext,
    RequestExecutionContext,
    install_direct_resolvers,
)
from schema.limits import QueryLimitsExtension, validation_rules
from schema.node import NodeQuery
from schema.orders import Fulfillment, Order, OrderQuery, Payment
from schema.orders_admin import OrdersAdminMutation, OrdersAdminQuery, PromoCode
from schema.prepared import PreparedOperations
from schema.scalars import DECIMAL_SCALAR
from schema.staff import AuditEntry, StaffMutation, StaffQuery
from schema.subscriptions import Subscription
from schema.webhooks import Webhook, WebhookDelivery, WebhookMutation, WebhookQuery

Query = merge_types(
    "Query",
    (
        NodeQuery,
        CatalogQuery,
        AccountQuery,
        CheckoutQuery,
        OrderQuery,
        OrdersAdminQuery,
        StaffQuery,
        WebhookQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        AccountMutation,
        CheckoutMutation,
        StaffMutation,
        CatalogAdminMutation,
        OrdersAdminMutation,
        WebhookMutation,
    ),
)


class ShopSchema(strawberry.Schema):
    # Cached documents run straight on the executor (schema.prepared); set by build_schema
    prepared: PreparedOperations | None = None

    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        """Errors are logged where they are formatted (schema.http), with request IDs."""

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """One-shot execution (HTTP) never runs a subscription: those stream over
        WebSocket (schema.ws), through `stream`."""
        allowed = set(allowed_operation_types or OperationType) - {OperationType.SUBSCRIPTION}
        if self.prepared is not None and query is not None:
            result = await self.prepared.run(
                self, query, variable_values, context_value, root_value, operation_name,
                allowed, operation_extensions,
            )  # fmt: skip
            if result is not None:
                return result
        return await super().execute(
            query, variable_values, context_value, root_value, operation_name, allowed,
            operation_extensions,
        )  # fmt: skip


def build_schema(
    *,
    debug: bool = False,
    fast_execution: bool | None = None,
    limits: QueryLimits | None = None,
) -> strawberry.Schema:
    """`fast_execution`: complete trivial fields inline (schema.execution); None reads
    `SHOPQL_FAST_EXECUTION` (default on). `limits`: the abuse limits (schema.limits);
    None reads `SHOPQL_MAX_*`."""
    if fast_execution is None:
        fast_execution = fast_execution_enabled()
    if limits is None:
        limits = QueryLimits.from_env()
    store, rules = DocumentStore(), validation_rules(limits)
    schema = ShopSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
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
            Fulfillment,
            PromoCode,
            ShippingMethod,
            AuditEntry,
            Webhook,
            WebhookDelivery,
        ],
        config=StrawberryConfig(
            disable_field_suggestions=not debug, scalar_map={Decimal: DECIMAL_SCALAR}
        ),
        execution_context_class=(
            FastExecutionContext if fast_execution else RequestExecutionContext
        ),
        # The document cache first: a document it holds passed every rule, the limits'
        # included, so the limits extension does not check it again
        extensions=[DocumentCache.factory(store), QueryLimitsExtension.factory(limits, rules)],
    )
    schema.prepared = PreparedOperations(store, rules, limits, schema.extensions)
    if fast_execution:
        install_direct_resolvers(schema._schema, schema.config.info_class)
    return schema


def export_sdl() -> str:
    return build_schema(debug=True).as_str() + "\n"
