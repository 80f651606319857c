"""The floor: what a good hand-written REST endpoint costs for each benchmark operation.

    DATABASE_URL=... SECRET_KEY=... .venv/bin/python -m uvicorn bench.floor:create_app \
        --factory --port 8100 --no-access-log

Plain Starlette handlers that run the statements a careful developer would write by hand
(a page, then one `IN (...)` batch per relation: never N+1, nothing shopql's GraphQL layer
adds) and answer exactly the JSON object shopql returns as `data` for the same operation,
serialised with orjson. `bench/run` checks the two are equal before timing anything.

It uses the same engine settings as shopql (`models.db.Database`: pool, SQLite pragmas,
asyncpg) and the same Core tables, so the difference between the two is what GraphQL
parsing, validation, execution and shopql's resolvers cost. Each response carries
`x-sql-statements`, the number of statements it ran.

Routes: `/products?first=N`, `/products/{slug}`, `/categories/{slug}`,
`/search?q=WORD&first=N`, `/me/orders?first=N` (`Authorization: Bearer <access token>`),
`/healthz`.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from models.accounts.tables import auth_sessions, users
from models.accounts.tokens import InvalidToken, verify_access_token
from models.catalog.tables import categories, images, products, variants
from models.db import Database
from models.orders.tables import order_lines, orders

MAX_PAGE = 100

P_COLS = (
    products.c.id,
    products.c.name,
    products.c.slug,
    products.c.price_min,
    products.c.price_max,
    products.c.currency,
    products.c.category_id,
    products.c.created_at,
)
P_DETAIL_COLS = (*P_COLS, products.c.description)
NEWEST = (products.c.created_at.desc(), products.c.id.desc())


def gid(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def money(minor: int, currency: str) -> dict[str, str]:
    # Every amount is non-negative (table constraints); two decimals for the demo currency.
    return {"amount": f"{minor // 100}.{minor % 100:02d}", "currency": currency}


def cursor(code: str, value: datetime, row_id: int) -> str:
    raw = orjson.dumps([code, value.isoformat(), row_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Floor:
    def __init__(self, db: Database, secret: str) -> None:
        self.db = db
        self.secret = secret
        if db.is_sqlite:
            query = sa.bindparam("fts_query")
            self._match = sa.literal_column("product_search").op("MATCH")(query)
            self._fts = sa.table("product_search", sa.column("rowid"))
            self._rank = sa.literal_column("(-bm25(product_search, 10.0, 1.0))", sa.Float())
        else:
            tsquery = sa.func.to_tsquery(
                sa.literal_column("'english'::regconfig"),
                sa.cast(sa.bindparam("ts_query"), sa.Text),
            )
            vector = sa.literal_column("products.search_vector")
            self._match = vector.op("@@")(tsquery)
            self._rank = sa.cast(sa.func.ts_rank(vector, tsquery), sa.Float())

    # ----------------------------------------------------------------- shared pieces

    async def _cards(
        self, conn: AsyncConnection, rows: Sequence[Any], *, detail: bool = False
    ) -> list[dict[str, Any]]:
        """Products as JSON: variants, images and categories in one IN (...) each."""
        if not rows:
            return []
        ids = [row.id for row in rows]
        by_product: dict[int, list[Any]] = {pid: [] for pid in ids}
        for v in await conn.execute(
            sa.select(
                variants.c.id,
                variants.c.product_id,
                variants.c.sku,
                variants.c.name,
                variants.c.price_amount,
                variants.c.currency,
                variants.c.quantity,
            )
            .where(variants.c.product_id.in_(ids))
            .order_by(variants.c.product_id, variants.c.id)
        ):
            by_product[v.product_id].append(v)
        pictures: dict[int, list[dict[str, str]]] = {pid: [] for pid in ids}
        for i in await conn.execute(
            sa.select(images.c.product_id, images.c.url, images.c.alt)
            .where(images.c.product_id.in_(ids))
            .order_by(images.c.product_id, images.c.position)
        ):
            pictures[i.product_id].append({"url": i.url, "alt": i.alt})
        category_ids = {row.category_id for row in rows if row.category_id is not None}
        cats: dict[int, dict[str, Any]] = {}
        if category_ids:
            for c in await conn.execute(
                sa.select(categories.c.id, categories.c.name, categories.c.slug).where(
                    categories.c.id.in_(category_ids)
                )
            ):
                cats[c.id] = {"id": gid("Category", c.id), "name": c.name, "slug": c.slug}
        cards = []
        for row in rows:
            vs = by_product[row.id]
            card: dict[str, Any] = {
                "id": gid("Product", row.id),
                "name": row.name,
                "slug": row.slug,
                "priceRange": {
                    "start": money(row.price_min, row.currency),
                    "stop": money(row.price_max, row.currency),
                },
                "isAvailable": any(v.quantity > 0 for v in vs),
                "variants": [
                    {
                        "id": gid("ProductVariant", v.id),
                        "sku": v.sku,
                        "name": v.name,
                        "price": money(v.price_amount, v.currency),
                        "quantityAvailable": v.quantity,
                    }
                    for v in vs
                ],
                "images": pictures[row.id],
                "category": cats.get(row.category_id) if row.category_id is not None else None,
            }
            if detail:
                card["description"] = row.description
            cards.append(card)
        return cards

    @staticmethod
    def _page_info(rows: Sequence[Any], size: int) -> dict[str, Any]:
        kept = rows[:size]
        return {
            "hasNextPage": len(rows) > size,
            "endCursor": cursor("CREATED_AT", kept[-1].created_at, kept[-1].id) if kept else None,
        }

    # ----------------------------------------------------------------- handlers

    async def listing(self, request: Request) -> Response:
        size = _size(request)
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(*P_COLS)
                    .where(products.c.is_published.is_(True))
                    .order_by(*NEWEST)
                    .limit(size + 1)
                )
            ).all()
            nodes = await self._cards(conn, rows[:size])
        data = {"products": {"nodes": nodes, "pageInfo": self._page_info(rows, size)}}
        return _json(data, statements=4)

    async def detail(self, request: Request) -> Response:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(*P_DETAIL_COLS).where(
                        products.c.slug == request.path_params["slug"],
                        products.c.is_published.is_(True),
                    )
                )
            ).first()
            cards = await self._cards(conn, [row] if row is not None else [], detail=True)
        return _json({"product": cards[0] if cards else None}, statements=4 if cards else 1)

    async def category(self, request: Request) -> Response:
        async with self.db.read() as conn:
            cat = (
                await conn.execute(
                    sa.select(categories.c.id, categories.c.name, categories.c.slug).where(
                        categories.c.slug == request.path_params["slug"]
                    )
                )
            ).first()
            if cat is None:
                return _json({"category": None}, statements=1)
            children = (
                await conn.execute(
                    sa.select(categories.c.id, categories.c.name, categories.c.slug)
                    .where(categories.c.parent_id == cat.id)
                    .order_by(categories.c.name, categories.c.id)
                    .limit(20)
                )
            ).all()
            tree = (
                sa.select(categories.c.id)
                .where(categories.c.id == cat.id)
                .cte("tree", recursive=True)
            )
            tree = tree.union_all(
                sa.select(categories.c.id).join(tree, categories.c.parent_id == tree.c.id)
            )
            rows = (
                await conn.execute(
                    sa.select(*P_COLS)
                    .where(
                        products.c.is_published.is_(True),
                        products.c.category_id.in_(sa.select(tree.c.id)),
                    )
                    .order_by(*NEWEST)
                    .limit(25)
                )
            ).all()
            nodes = await self._cards(conn, rows[:24])
        data = {
            "category": {
                "id": gid("Category", cat.id),
                "name": cat.name,
                "slug": cat.slug,
                "children": {
                    "nodes": [
                        {"id": gid("Category", c.id), "name": c.name, "slug": c.slug}
                        for c in children
                    ]
                },
                "products": {"nodes": nodes, "pageInfo": self._page_info(rows, 24)},
            }
        }
        return _json(data, statements=6 if nodes else 3)

    async def search(self, request: Request) -> Response:
        size = _size(request)
        word = "".join(ch for ch in request.query_params.get("q", "").lower() if ch.isalnum())
        if not word:
            return _json({"products": {"nodes": []}}, statements=0)
        stmt = sa.select(*P_COLS)
        if self.db.is_sqlite:
            stmt = stmt.join(self._fts, self._fts.c.rowid == products.c.id)
            params = {"fts_query": f'"{word}"*'}
        else:
            params = {"ts_query": f"'{word}':*"}
        stmt = (
            stmt.where(self._match, products.c.is_published.is_(True))
            .order_by(self._rank.desc(), products.c.id.desc())
            .limit(size)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt, params)).all()
            nodes = await self._cards(conn, rows)
        return _json({"products": {"nodes": nodes}}, statements=4 if nodes else 1)

    async def my_orders(self, request: Request) -> Response:
        size = _size(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return _json({"me": None}, statements=0)
        try:
            claims = verify_access_token(token.strip(), secret=self.secret)
        except InvalidToken:
            return _json({"me": None}, statements=0)
        async with self.db.read() as conn:
            email = (
                await conn.execute(
                    sa.select(users.c.email)
                    .join(auth_sessions, auth_sessions.c.user_id == users.c.id)
                    .where(
                        users.c.id == claims.user_id,
                        users.c.is_active.is_(True),
                        auth_sessions.c.id == claims.session_id,
                        auth_sessions.c.revoked_at.is_(None),
                    )
                )
            ).scalar()
            if email is None:
                return _json({"me": None}, statements=1)
            rows = (
                await conn.execute(
                    sa.select(
                        orders.c.id,
                        orders.c.number,
                        orders.c.status,
                        orders.c.payment_status,
                        orders.c.created_at,
                        orders.c.total_amount,
                        orders.c.currency,
                    )
                    .where(orders.c.user_id == claims.user_id)
                    .order_by(orders.c.created_at.desc(), orders.c.id.desc())
                    .limit(size)
                )
            ).all()
            lines: dict[int, list[dict[str, Any]]] = {row.id: [] for row in rows}
            if rows:
                for line in await conn.execute(
                    sa.select(
                        order_lines.c.id,
                        order_lines.c.order_id,
                        order_lines.c.product_name,
                        order_lines.c.variant_name,
                        order_lines.c.sku,
                        order_lines.c.quantity,
                        order_lines.c.unit_amount,
                        order_lines.c.total_amount,
                        order_lines.c.currency,
                    )
                    .where(order_lines.c.order_id.in_(list(lines)))
                    .order_by(order_lines.c.order_id, order_lines.c.id)
                ):
                    lines[line.order_id].append(
                        {
                            "id": gid("OrderLine", line.id),
                            "productName": line.product_name,
                            "variantName": line.variant_name,
                            "sku": line.sku,
                            "quantity": line.quantity,
                            "unitPrice": money(line.unit_amount, line.currency),
                            "totalPrice": money(line.total_amount, line.currency),
                        }
                    )
        nodes = [
            {
                "id": gid("Order", row.id),
                "number": row.number,
                "status": row.status,
                "paymentStatus": row.payment_status,
                "createdAt": row.created_at.isoformat(),
                "total": money(row.total_amount, row.currency),
                "lines": lines[row.id],
            }
            for row in rows
        ]
        data = {"me": {"email": email, "orders": {"nodes": nodes}}}
        return _json(data, statements=3 if rows else 2)

    async def healthz(self, request: Request) -> Response:
        return Response(b"ok")


def _size(request: Request) -> int:
    try:
        size = int(request.query_params.get("first", "24"))
    except ValueError:
        size = 24
    return max(0, min(size, MAX_PAGE))


def _json(data: Any, *, statements: int) -> Response:
    return Response(
        orjson.dumps(data),
        media_type="application/json",
        headers={"x-sql-statements": str(statements)},
    )


def create_app() -> Starlette:
    url = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///./shopql.db")
    db = Database(url, pool_size=int(os.environ.get("SHOPQL_DB_POOL_SIZE", "10")))
    floor = Floor(db, os.environ["SECRET_KEY"])
    routes = [
        Route("/products", floor.listing),
        Route("/products/{slug}", floor.detail),
        Route("/categories/{slug}", floor.category),
        Route("/search", floor.search),
        Route("/me/orders", floor.my_orders),
        Route("/healthz", floor.healthz),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await db.dispose()

    return Starlette(routes=routes, lifespan=lifespan)
