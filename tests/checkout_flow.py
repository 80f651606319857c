"""Plain-function factories for checkout and order tests: callers (anonymous or signed in),
customers, stocked variants, promo codes, ready-to-pay checkouts, completed orders and
direct row counts.

Everything that reaches the API goes through HTTP; the database is only used to arrange
facts a test needs (stock, prices, special promo codes, old orders) and to check results.
Shared read-only by other test modules: keep the signatures stable.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa

from models.accounts import queries as accounts
from models.accounts.passwords import Passwords
from models.catalog.tables import products, variants
from models.checkout.tables import promo_codes
from models.db import Database, utcnow
from models.orders.tables import order_lines, orders
from models.payments.tables import dummy_charges

GraphQL = Callable[..., Awaitable[dict[str, Any]]]
Lines = Sequence[tuple[int, int]]  # (variant primary key, quantity)

PASSWORD = "correct horse battery"
ERRORS = "errors { field code message }"
MONEY = "{ amount currency }"
ADDRESS_FIELDS = """firstName lastName companyName streetAddress1 streetAddress2 city
  postalCode countryCode countryArea phone"""
CHECKOUT_FIELDS = f"""
  id email promoCode quantity user {{ id email }}
  lines {{ id quantity variant {{ id sku }} unitPrice {MONEY} totalPrice {MONEY} }}
  shippingAddress {{ {ADDRESS_FIELDS} }}
  shippingMethod {{ id name }}
  availableShippingMethods {{ name }}
  subtotal {MONEY} shippingPrice {MONEY} discount {MONEY} total {MONEY}
"""
ORDER_FIELDS = f"""
  id number status paymentStatus email user {{ id email }}
  lines {{ productName variantName sku quantity quantityFulfilled
           unitPrice {MONEY} totalPrice {MONEY} variant {{ id }} }}
  shippingAddress {{ {ADDRESS_FIELDS} }} shippingMethodName
  subtotal {MONEY} shippingPrice {MONEY} discount {MONEY} total {MONEY}
  payments {{ gateway status amount {MONEY} refundedAmount {MONEY} pspReference }}
"""
US_ADDRESS = {
    "firstName": "Ann",
    "lastName": "Lee",
    "streetAddress1": "1 Main Street",
    "city": "Springfield",
    "postalCode": "12345",
    "countryCode": "US",
}


def _payload_mutation(name: str, args: str, params: str, result: str) -> str:
    return f"mutation({params}) {{ {name}({args}) {{ {result} {ERRORS} }} }}"


CHECKOUT = f"checkout {{ {CHECKOUT_FIELDS} }}"
CHECKOUT_CREATE = _payload_mutation(
    "checkoutCreate", "input: $input", "$input: CheckoutCreateInput!", CHECKOUT
)
LINES_ADD = _payload_mutation(
    "checkoutLinesAdd", "checkoutId: $id, lines: $lines",
    "$id: ID!, $lines: [CheckoutLineInput!]!", CHECKOUT,
)  # fmt: skip
LINES_UPDATE = _payload_mutation(
    "checkoutLinesUpdate", "checkoutId: $id, lines: $lines",
    "$id: ID!, $lines: [CheckoutLineUpdateInput!]!", CHECKOUT,
)  # fmt: skip
LINES_DELETE = _payload_mutation(
    "checkoutLinesDelete", "checkoutId: $id, lineIds: $lineIds",
    "$id: ID!, $lineIds: [ID!]!", CHECKOUT,
)  # fmt: skip
EMAIL_UPDATE = _payload_mutation(
    "checkoutEmailUpdate", "checkoutId: $id, email: $email", "$id: ID!, $email: String!", CHECKOUT
)
ADDRESS_UPDATE = _payload_mutation(
    "checkoutShippingAddressUpdate", "checkoutId: $id, address: $address",
    "$id: ID!, $address: AddressInput!", CHECKOUT,
)  # fmt: skip
METHOD_UPDATE = _payload_mutation(
    "checkoutShippingMethodUpdate", "checkoutId: $id, shippingMethodId: $method",
    "$id: ID!, $method: ID!", CHECKOUT,
)  # fmt: skip
PROMO_APPLY = _payload_mutation(
    "checkoutPromoCodeApply", "checkoutId: $id, promoCode: $code",
    "$id: ID!, $code: String!", CHECKOUT,
)  # fmt: skip
PROMO_REMOVE = _payload_mutation("checkoutPromoCodeRemove", "checkoutId: $id", "$id: ID!", CHECKOUT)
CUSTOMER_ATTACH = _payload_mutation(
    "checkoutCustomerAttach", "checkoutId: $id", "$id: ID!", CHECKOUT
)
COMPLETE = _payload_mutation(
    "checkoutComplete", "checkoutId: $id, payment: $payment, idempotencyKey: $key",
    "$id: ID!, $payment: PaymentInput!, $key: String!", f"order {{ {ORDER_FIELDS} }}",
)  # fmt: skip
CHECKOUT_QUERY = f"query($id: ID!) {{ checkout(id: $id) {{ {CHECKOUT_FIELDS} }} }}"
TOKEN_CREATE = f"""mutation($email: String!, $password: String!) {{
  tokenCreate(email: $email, password: $password) {{ accessToken {ERRORS} }} }}"""

# ------------------------------------------------------------------------------ ids, money


def gid(type_name: str, key: int | str) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def variant_gid(variant_id: int) -> str:
    return gid("ProductVariant", variant_id)


def money(minor: int) -> str:
    """USD minor units as the API prints them ("12.30")."""
    return f"{Decimal(minor).scaleb(-2):f}"


def minor(amount: str) -> int:
    """The API's decimal string back to minor units, exactly."""
    value = Decimal(amount) * 100
    assert value == value.to_integral_value(), amount
    return int(value)


def line_inputs(lines: Lines) -> list[dict[str, Any]]:
    return [{"variantId": variant_gid(v), "quantity": q} for v, q in lines]


# ------------------------------------------------------------------------------ callers


def caller(client: httpx.AsyncClient, token: str | None = None) -> GraphQL:
    """POST a query (as the bearer of `token`, if any); the JSON body. Fails on any
    top-level error unless called with errors=True (like conftest.graphql_caller)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}

    async def call(
        query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if not kw.get("errors", False):
            assert "errors" not in body, body["errors"]
        return body

    return call


async def mutate(gql: GraphQL, mutation: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The payload of a one-field mutation (no top-level errors allowed)."""
    body = await gql(mutation, variables)
    (payload,) = body["data"].values()
    assert isinstance(payload, dict)
    return payload


def codes(payload: dict[str, Any]) -> list[str]:
    return [e["code"] for e in payload["errors"]]


def top_codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def gateway_of(client: httpx.AsyncClient, name: str = "dummy") -> Any:
    """The payment gateway instance behind a test client's app (to observe or wrap it)."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    for route in transport.app.routes:  # type: ignore[attr-defined]
        services = getattr(getattr(route, "endpoint", None), "services", None)
        if services is not None and name in getattr(services, "gateways", {}):
            return services.gateways[name]
    raise AssertionError(f"no {name!r} gateway behind this client")


# ------------------------------------------------------------------------------ customers

_hashes: dict[str, str] = {}


async def add_customer(
    db: Database,
    email: str,
    *,
    first_name: str = "",
    last_name: str = "",
    is_staff: bool = False,
    permissions: Iterable[str] = (),
    password: str = PASSWORD,
) -> int:
    """A user straight in the database; its id."""
    if password not in _hashes:
        _hashes[password] = await Passwords().hash(password)
    async with db.transaction() as conn:
        return await accounts.create_user(
            conn,
            email=email,
            password_hash=_hashes[password],
            first_name=first_name,
            last_name=last_name,
            is_staff=is_staff,
            permissions=permissions,
        )


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> GraphQL:
    """tokenCreate (must succeed); a caller that sends the access token."""
    payload = await mutate(caller(client), TOKEN_CREATE, {"email": email, "password": password})
    assert payload["errors"] == [], payload["errors"]
    return caller(client, payload["accessToken"])


async def add_signed_in_customer(
    db: Database, client: httpx.AsyncClient, email: str, **kw: Any
) -> tuple[int, GraphQL]:
    user_id = await add_customer(db, email, **kw)
    return user_id, await sign_in(client, email, kw.get("password", PASSWORD))


# ------------------------------------------------------------------------------ catalog facts


async def stock_variants(
    db: Database, count: int, *, quantity: int = 500, prices: Sequence[int] | None = None
) -> list[int]:
    """`count` variants of distinct published products (each product's first variant, in
    product order), given `quantity` in stock and, when `prices` is given, those prices
    (minor units). Their ids."""
    first = (
        sa.select(sa.func.min(variants.c.id))
        .join(products, products.c.id == variants.c.product_id)
        .where(products.c.is_published.is_(True))
        .group_by(variants.c.product_id)
        .scalar_subquery()
    )
    async with db.transaction() as conn:
        rows = await conn.execute(
            sa.select(variants.c.id)
            .where(variants.c.id.in_(first))
            .order_by(variants.c.id)
            .limit(count)
        )
        found = [int(row[0]) for row in rows]
        assert len(found) == count, "the seeded catalog has enough published variants"
        for i, variant_id in enumerate(found):
            values: dict[str, Any] = {"quantity": quantity}
            if prices is not None:
                values["price_amount"] = prices[i]
            await conn.execute(variants.update().where(variants.c.id == variant_id).values(values))
    return found


async def set_variant(db: Database, variant_id: int, **values: Any) -> None:
    async with db.transaction() as conn:
        await conn.execute(variants.update().where(variants.c.id == variant_id).values(values))


async def set_product_of(db: Database, variant_id: int, **values: Any) -> int:
    """Update the product of a variant; the product's id."""
    async with db.transaction() as conn:
        product_id = int(
            (
                await conn.execute(
                    sa.select(variants.c.product_id).where(variants.c.id == variant_id)
                )
            ).scalar_one()
        )
        await conn.execute(products.update().where(products.c.id == product_id).values(values))
    return product_id


async def variant_row(db: Database, variant_id: int) -> dict[str, Any]:
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(variants, products.c.name.label("product_name"))
                .join(products, products.c.id == variants.c.product_id)
                .where(variants.c.id == variant_id)
            )
        ).one()
    return dict(row._mapping)


async def stock_of(db: Database, variant_ids: Iterable[int]) -> dict[int, int]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(variants.c.id, variants.c.quantity).where(
                variants.c.id.in_(list(variant_ids))
            )
        )
        return {int(r[0]): int(r[1]) for r in rows}


async def add_promo(
    db: Database,
    code: str,
    *,
    kind: str = "PERCENTAGE",
    value: int = 1000,
    min_subtotal: int = 0,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    usage_limit: int | None = None,
    used_count: int = 0,
    once_per_customer: bool = False,
    currency: str = "USD",
) -> int:
    """A promo code row (code upper case, as the API looks codes up); its id."""
    now = utcnow()
    async with db.transaction() as conn:
        return int(
            (
                await conn.execute(
                    promo_codes.insert()
                    .values(
                        code=code, kind=kind, value=value, currency=currency,
                        min_subtotal_amount=min_subtotal, starts_at=starts_at, ends_at=ends_at,
                        usage_limit=usage_limit, used_count=used_count,
                        once_per_customer=once_per_customer, created_at=now, updated_at=now,
                    )
                    .returning(promo_codes.c.id)
                )
            ).scalar_one()
        )  # fmt: skip


# ------------------------------------------------------------------------------ checkouts


async def shipping_method_ids(gql: GraphQL) -> dict[str, str]:
    """Shipping method name -> global ID."""
    body = await gql("{ shippingMethods { id name } }")
    return {m["name"]: m["id"] for m in body["data"]["shippingMethods"]}


async def create_checkout(
    gql: GraphQL, lines: Lines, *, email: str | None = "shopper@example.com"
) -> dict[str, Any]:
    """checkoutCreate that must succeed; the checkout."""
    data: dict[str, Any] = {"lines": line_inputs(lines)}
    if email is not None:
        data["email"] = email
    payload = await mutate(gql, CHECKOUT_CREATE, {"input": data})
    assert payload["errors"] == [], payload["errors"]
    checkout: dict[str, Any] = payload["checkout"]
    return checkout


async def ready_checkout(
    gql: GraphQL,
    lines: Lines,
    *,
    email: str | None = "shopper@example.com",
    address: dict[str, Any] | None = None,
    method: str = "Standard",
    promo: str | None = None,
) -> dict[str, Any]:
    """A checkout with lines, email, shipping address and method (and a promo code): ready
    to complete. The checkout as the last mutation returned it."""
    checkout = await create_checkout(gql, lines, email=email)
    checkout_id = checkout["id"]
    steps: list[tuple[str, dict[str, Any]]] = [
        (ADDRESS_UPDATE, {"id": checkout_id, "address": address or US_ADDRESS}),
        (METHOD_UPDATE, {"id": checkout_id, "method": (await shipping_method_ids(gql))[method]}),
    ]
    if promo is not None:
        steps.append((PROMO_APPLY, {"id": checkout_id, "code": promo}))
    for mutation, variables in steps:
        payload = await mutate(gql, mutation, variables)
        assert payload["errors"] == [], (mutation, payload["errors"])
        checkout = payload["checkout"]
    return checkout


async def read_checkout(gql: GraphQL, checkout_id: str) -> dict[str, Any] | None:
    body = await gql(CHECKOUT_QUERY, {"id": checkout_id})
    found: dict[str, Any] | None = body["data"]["checkout"]
    return found


async def complete(
    gql: GraphQL, checkout_id: str, key: str, *, token: str = "tok_visa", gateway: str = "dummy"
) -> dict[str, Any]:
    """checkoutComplete; its payload { order errors }."""
    return await mutate(
        gql,
        COMPLETE,
        {"id": checkout_id, "payment": {"gateway": gateway, "token": token}, "key": key},
    )


async def place_order(gql: GraphQL, lines: Lines, **kw: Any) -> dict[str, Any]:
    """A ready checkout completed with tok_visa and a fresh key; the order."""
    checkout = await ready_checkout(gql, lines, **kw)
    payload = await complete(gql, checkout["id"], f"key-{uuid.uuid4().hex}")
    assert payload["errors"] == [], payload["errors"]
    order: dict[str, Any] = payload["order"]
    return order


# ------------------------------------------------------------------------------ orders, rows


async def insert_order(
    db: Database,
    *,
    user_id: int | None,
    email: str,
    lines: Lines,
    unit_price: int = 1000,
    shipping: int = 0,
    discount: int = 0,
    status: str = "UNFULFILLED",
    payment_status: str = "PAID",
    created_at: datetime | None = None,
) -> int:
    """An order (and its line snapshots) straight in the tables, numbered as the app numbers
    them (10000 + id); its id."""
    subtotal = sum(q * unit_price for _, q in lines)
    when = created_at or utcnow()
    async with db.transaction() as conn:
        order_id = int(
            (
                await conn.execute(
                    orders.insert()
                    .values(
                        number=f"t{uuid.uuid4().hex[:18]}", user_id=user_id, email=email,
                        status=status, payment_status=payment_status, currency="USD",
                        subtotal_amount=subtotal, shipping_amount=shipping,
                        discount_amount=discount, total_amount=subtotal + shipping - discount,
                        created_at=when, updated_at=when,
                    )
                    .returning(orders.c.id)
                )
            ).scalar_one()
        )  # fmt: skip
        await conn.execute(
            orders.update().where(orders.c.id == order_id).values(number=str(10_000 + order_id))
        )
        if not lines:
            return order_id
        await conn.execute(
            order_lines.insert(),
            [
                {"order_id": order_id, "variant_id": v, "product_name": f"Product {v}",
                 "variant_name": f"Variant {v}", "sku": f"SKU-{v}", "quantity": q,
                 "unit_amount": unit_price, "total_amount": unit_price * q, "currency": "USD"}
                for v, q in lines
            ],
        )  # fmt: skip
    return order_id


async def count_rows(db: Database, table: sa.Table, *where: Any) -> int:
    async with db.read() as conn:
        stmt = sa.select(sa.func.count()).select_from(table).where(*where)
        return int((await conn.execute(stmt)).scalar_one())


async def successful_charges(db: Database, key: str | None = None) -> int:
    """Charges the dummy gateway made (for one idempotency key, or all)."""
    where = [dummy_charges.c.outcome == "succeeded"]
    if key is not None:
        where.append(dummy_charges.c.idempotency_key == key)
    return await count_rows(db, dummy_charges, *where)
