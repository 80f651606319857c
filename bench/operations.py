"""The operations `bench/run` times (issue 8), as each system is asked for them.

Every operation has three spellings that must return the same data:

- shopql: a GraphQL query and its variables, POSTed to `/graphql`;
- the floor (`bench/floor.py`): a GET path whose JSON body equals shopql's `data`;
- PostGraphile 4: the closest GraphQL query its generated schema can express (its names
  differ; see `POSTGRAPHILE_FUNCTIONS` for the two SQL functions it needs and RESULTS.md
  for where it is not identical).

`counts(data)` / `pg_counts(data)` reduce a response to the number of items it holds (for
example products, variants and images), compared before anything is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEARCH_WORD = "linen"
CATEGORY_SLUG = "apparel"
CUSTOMER_EMAIL = "bench-customer@example.com"
CUSTOMER_ORDERS = 20
LINES_PER_ORDER = 3

MONEY = "{ amount currency }"
PRODUCT_FIELDS = f"""
      id name slug
      priceRange {{ start {MONEY} stop {MONEY} }}
      isAvailable
      variants {{ id sku name price {MONEY} quantityAvailable }}
      images {{ url alt }}
      category {{ id name slug }}"""

LISTING = f"""query Listing($first: Int!) {{
  products(first: $first) {{
    nodes {{ {PRODUCT_FIELDS} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""

DETAIL = f"""query Detail($slug: String!) {{
  product(slug: $slug) {{ {PRODUCT_FIELDS}
      description
  }}
}}"""

CATEGORY = f"""query CategoryPage($slug: String!) {{
  category(slug: $slug) {{
    id name slug
    children(first: 20) {{ nodes {{ id name slug }} }}
    products(first: 24) {{
      nodes {{ {PRODUCT_FIELDS} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}"""

SEARCH = f"""query Search($search: String!) {{
  products(first: 24, search: $search) {{
    nodes {{ {PRODUCT_FIELDS} }}
  }}
}}"""

ME_ORDERS = f"""query MyOrders {{
  me {{
    email
    orders(first: 20) {{
      nodes {{
        id number status paymentStatus createdAt total {MONEY}
        lines {{ id productName variantName sku quantity unitPrice {MONEY} totalPrice {MONEY} }}
      }}
    }}
  }}
}}"""

# --------------------------------------------------------------------------- PostGraphile

PG_PRODUCT_FIELDS = """
      id name slug priceMin priceMax currency
      productVariantsByProductId(orderBy: [ID_ASC]) {
        nodes { id sku name priceAmount currency quantity }
      }
      productImagesByProductId(orderBy: [POSITION_ASC]) { nodes { url alt } }
      categoryByCategoryId { id name slug }"""

PG_LISTING = f"""query Listing($first: Int!) {{
  allProducts(first: $first, condition: {{ isPublished: true }},
              orderBy: [CREATED_AT_DESC, ID_DESC]) {{
    nodes {{ {PG_PRODUCT_FIELDS} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""

PG_DETAIL = f"""query Detail($slug: String!) {{
  productBySlug(slug: $slug) {{ {PG_PRODUCT_FIELDS}
      description isPublished
  }}
}}"""

PG_CATEGORY = f"""query CategoryPage($slug: String!) {{
  categoryBySlug(slug: $slug) {{
    id name slug
    categoriesByParentId(first: 20, orderBy: [NAME_ASC, ID_ASC]) {{ nodes {{ id name slug }} }}
    subtreeProducts(first: 24) {{
      nodes {{ {PG_PRODUCT_FIELDS} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}"""

PG_SEARCH = f"""query Search($search: String!) {{
  searchProducts(term: $search, first: 24) {{
    nodes {{ {PG_PRODUCT_FIELDS} }}
  }}
}}"""

PG_ME_ORDERS = """query MyOrders($userId: Int!) {
  userById(id: $userId) {
    email
    ordersByUserId(first: 20, orderBy: [CREATED_AT_DESC, ID_DESC]) {
      nodes {
        id number status paymentStatus createdAt totalAmount currency
        orderLinesByOrderId(orderBy: [ID_ASC]) {
          nodes { id productName variantName sku quantity unitAmount totalAmount currency }
        }
      }
    }
  }
}"""

# What a PostGraphile user writes for what its generated schema cannot express: a computed
# column (Category.subtreeProducts: the category's and its descendants' published
# products, newest first, as shopql's category page) and a custom query (searchProducts:
# published products matching a prefix word, by ts_rank as shopql ranks them). Created by
# `bench/run` in the benchmark's PostgreSQL database only.
POSTGRAPHILE_FUNCTIONS = (
    """
CREATE OR REPLACE FUNCTION categories_subtree_products(c categories) RETURNS SETOF products
LANGUAGE sql STABLE AS $$
  WITH RECURSIVE tree(id) AS (
    SELECT c.id
    UNION ALL
    SELECT categories.id FROM categories JOIN tree ON categories.parent_id = tree.id
  )
  SELECT products.* FROM products
  WHERE products.is_published AND products.category_id IN (SELECT id FROM tree)
  ORDER BY products.created_at DESC, products.id DESC
$$""",
    """
CREATE OR REPLACE FUNCTION search_products(term text) RETURNS SETOF products
LANGUAGE sql STABLE AS $$
  SELECT products.* FROM products
  WHERE products.is_published
    AND products.search_vector @@ to_tsquery('english', quote_literal(lower(term)) || ':*')
  ORDER BY ts_rank(products.search_vector,
                   to_tsquery('english', quote_literal(lower(term)) || ':*')) DESC,
           products.id DESC
$$""",
)


# --------------------------------------------------------------------------- counting


def _dig(data: Any, *path: str) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _product_counts(nodes: list[dict[str, Any]] | None) -> tuple[int, int, int]:
    nodes = nodes or []
    return (
        len(nodes),
        sum(len(p["variants"]) for p in nodes),
        sum(len(p["images"]) for p in nodes),
    )


def _pg_product_counts(nodes: list[dict[str, Any]] | None) -> tuple[int, int, int]:
    nodes = nodes or []
    return (
        len(nodes),
        sum(len(p["productVariantsByProductId"]["nodes"]) for p in nodes),
        sum(len(p["productImagesByProductId"]["nodes"]) for p in nodes),
    )


def _order_counts(user: dict[str, Any] | None, orders: str, lines: str) -> tuple[int, int]:
    if not user:
        return (0, 0)
    nodes = user[orders]["nodes"]
    line_count = sum(len(o[lines]["nodes"] if lines.endswith("Id") else o[lines]) for o in nodes)
    return (len(nodes), line_count)


IDENTITY_FIELDS = frozenset({"slug", "sku", "number"})


def identities(data: Any) -> list[str]:
    """Every slug, SKU and order number in document order: the same list from shopql and
    PostGraphile means the same rows in the same order (their field names differ)."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in IDENTITY_FIELDS and isinstance(value, str):
                found.append(value)
            else:
                found += identities(value)
    elif isinstance(data, list):
        for item in data:
            found += identities(item)
    return found


@dataclass(frozen=True)
class Operation:
    key: str
    label: str
    query: str
    variables: dict[str, Any]
    floor_path: str
    counts: Callable[[dict[str, Any]], tuple[int, ...]]
    pg_query: str
    pg_variables: dict[str, Any]
    pg_counts: Callable[[dict[str, Any]], tuple[int, ...]]
    pg_note: str = ""
    needs_auth: bool = False
    expect: tuple[int, ...] = field(default=())  # minimum counts: fail on an empty page


def operations(*, product_slug: str, user_id: int) -> list[Operation]:
    """The issue's operations; `product_slug` is the first product of the listing."""
    return [
        Operation(
            "listing24",
            "products(first: 24)",
            LISTING,
            {"first": 24},
            "/products?first=24",
            lambda d: _product_counts(_dig(d, "products", "nodes")),
            PG_LISTING,
            {"first": 24},
            lambda d: _pg_product_counts(_dig(d, "allProducts", "nodes")),
            "allProducts(condition: {isPublished: true}, orderBy: [CREATED_AT_DESC, ID_DESC]); "
            "priceRange and prices are the raw minor-unit columns (no Money objects), "
            "isAvailable is not asked for (the client derives it from the variants' "
            "quantity), ids are the integer keys (no global IDs)",
            expect=(24,),
        ),
        Operation(
            "listing100",
            "products(first: 100)",
            LISTING,
            {"first": 100},
            "/products?first=100",
            lambda d: _product_counts(_dig(d, "products", "nodes")),
            PG_LISTING,
            {"first": 100},
            lambda d: _pg_product_counts(_dig(d, "allProducts", "nodes")),
            "as products(first: 24)",
            expect=(100,),
        ),
        Operation(
            "detail",
            "product(slug)",
            DETAIL,
            {"slug": product_slug},
            f"/products/{product_slug}",
            lambda d: _product_counts([d["product"]] if d.get("product") else []),
            PG_DETAIL,
            {"slug": product_slug},
            lambda d: _pg_product_counts([d["productBySlug"]] if d.get("productBySlug") else []),
            "productBySlug does not hide unpublished products (the client gets isPublished "
            "and must check it); otherwise as the listing",
            expect=(1,),
        ),
        Operation(
            "category",
            f'category(slug: "{CATEGORY_SLUG}") + children + products(first: 24)',
            CATEGORY,
            {"slug": CATEGORY_SLUG},
            f"/categories/{CATEGORY_SLUG}",
            lambda d: (
                len(_dig(d, "category", "children", "nodes") or []),
                *_product_counts(_dig(d, "category", "products", "nodes")),
            ),
            PG_CATEGORY,
            {"slug": CATEGORY_SLUG},
            lambda d: (
                len(_dig(d, "categoryBySlug", "categoriesByParentId", "nodes") or []),
                *_pg_product_counts(_dig(d, "categoryBySlug", "subtreeProducts", "nodes")),
            ),
            "the generated schema only has a category's direct products, so the subtree's "
            "products come from a computed column, Category.subtreeProducts (SQL function "
            "`categories_subtree_products`, created by bench/run); children by "
            "categoriesByParentId",
            expect=(1, 24),
        ),
        Operation(
            "search",
            f'products(first: 24, search: "{SEARCH_WORD}")',
            SEARCH,
            {"search": SEARCH_WORD},
            f"/search?q={SEARCH_WORD}&first=24",
            lambda d: _product_counts(_dig(d, "products", "nodes")),
            PG_SEARCH,
            {"search": SEARCH_WORD},
            lambda d: _pg_product_counts(_dig(d, "searchProducts", "nodes")),
            "no full-text search in the generated schema: a custom query, searchProducts "
            "(SQL function `search_products`: the same prefix tsquery and ts_rank order "
            "as shopql's PostgreSQL search)",
            expect=(1,),
        ),
        Operation(
            "me_orders",
            "me { orders(first: 20) { lines } }",
            ME_ORDERS,
            {},
            "/me/orders?first=20",
            lambda d: _order_counts(d.get("me"), "orders", "lines"),
            PG_ME_ORDERS,
            {"userId": user_id},
            lambda d: _order_counts(d.get("userById"), "ordersByUserId", "orderLinesByOrderId"),
            "no authentication (PostGraphile's JWT support needs PostgreSQL roles and "
            "row-level security): userById(id) with the customer's id, while shopql and "
            "the floor verify the access token and look its session up (one more statement)",
            needs_auth=True,
            expect=(CUSTOMER_ORDERS, CUSTOMER_ORDERS * LINES_PER_ORDER),
        ),
    ]
