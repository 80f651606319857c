"""The benchmark's databases: the deterministic catalog plus one customer with 20 orders.

`prepare(url, products=N)` makes `url` hold exactly the catalog `shopql seed --products N`
writes (seed 42), migrated with `shopql migrate`, plus the customer
(`operations.CUSTOMER_EMAIL`, a session for access tokens, 20 orders of 3 lines each on
real variants). A database that already holds N products and the customer is reused as
it is; one that holds another catalog is rebuilt (these are the benchmark's own
databases: `/tmp/shopql-bench-<N>-seed42.db` and PostgreSQL `shopql_bench` for 100,000
products, `shopql_bench_<N>` otherwise). On PostgreSQL it also creates the two SQL
functions PostGraphile's queries use (`operations.POSTGRAPHILE_FUNCTIONS`) and runs
`VACUUM ANALYZE` after seeding.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.operations import (
    CUSTOMER_EMAIL,
    CUSTOMER_ORDERS,
    LINES_PER_ORDER,
    POSTGRAPHILE_FUNCTIONS,
)

ROOT = Path(__file__).resolve().parent.parent
SEED = 42
PG_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
ORDERS_START = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
# Signs the customer's access tokens; every server of one run gets it (never reused).
SECRET_KEY = secrets.token_urlsafe(48)


class DatasetError(Exception):
    pass


@dataclass(frozen=True)
class Dataset:
    url: str
    backend: str  # "SQLite 3.40.1" / "PostgreSQL 15.20 ..."
    products: int
    user_id: int
    session_id: str
    product_slug: str  # the listing's first product: the detail operation's subject
    reused: bool


def sqlite_url(products: int) -> str:
    path = Path(tempfile.gettempdir()) / f"shopql-bench-{products}-seed{SEED}.db"
    return f"sqlite+aiosqlite:///{path}"


def postgres_url(products: int, server: str = PG_SERVER) -> str:
    name = "shopql_bench" if products == 100_000 else f"shopql_bench_{products}"
    return f"{server.rstrip('/')}/{name}"


def libpq_url(url: str) -> str:
    """postgresql+asyncpg://... as the postgres://... that node's pg expects."""
    u = make_url(url)
    auth = u.username or "postgres"
    if u.password:
        auth += f":{u.password}"
    return f"postgres://{auth}@{u.host or '127.0.0.1'}:{u.port or 5432}/{u.database}"


def _shopql(url: str, *args: str) -> None:
    command = [str(Path(sys.executable).parent / "shopql"), *args]
    env = {**os.environ, "DATABASE_URL": url, "SHOPQL_DEBUG": "0", "SECRET_KEY": SECRET_KEY}
    print(f"  $ shopql {' '.join(args)}", file=sys.stderr)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise DatasetError(f"shopql {' '.join(args)} failed:\n{done.stderr[-3000:]}")


async def _pg_admin(url: str, *statements: str) -> list[Any]:
    engine = create_async_engine(
        make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    rows: list[Any] = []
    try:
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.exec_driver_sql(statement)
                rows = list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()
    return rows


async def _pg_create(url: str, *, drop: bool) -> None:
    name = make_url(url).database
    if not name or not name.replace("_", "").isalnum():
        raise DatasetError(f"unexpected PostgreSQL database name in {url}")
    if drop:
        await _pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if not await _pg_admin(url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        print(f"  creating PostgreSQL database {name}", file=sys.stderr)
        await _pg_admin(url, f'CREATE DATABASE "{name}"')


def _remove_sqlite(url: str) -> None:
    database = make_url(url).database
    if not database:
        raise DatasetError(f"not a SQLite file: {url}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(database + suffix).unlink(missing_ok=True)


async def _count_products(url: str) -> int:
    from models.catalog.tables import products
    from models.db import Database

    db = Database(url, pool_size=1)
    try:
        async with db.read() as conn:
            stmt = sa.select(sa.func.count()).select_from(products)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await db.dispose()


async def _backend(db: Any) -> str:
    async with db.read() as conn:
        if db.is_sqlite:
            return "SQLite " + (await conn.exec_driver_sql("select sqlite_version()")).scalar_one()
        version = (await conn.exec_driver_sql("show server_version")).scalar_one()
        return f"PostgreSQL {version}"


async def _customer(db: Any) -> tuple[int, str, bool]:
    """(user id, session id, reused): the customer with its orders, created if missing."""
    from models.accounts.passwords import Passwords
    from models.accounts.tables import auth_sessions, users
    from models.catalog.tables import products, variants
    from models.orders.tables import order_lines, orders

    async with db.read() as conn:
        user_id = (
            await conn.execute(sa.select(users.c.id).where(users.c.email == CUSTOMER_EMAIL))
        ).scalar()
        if user_id is not None:
            session_id = (
                await conn.execute(
                    sa.select(auth_sessions.c.id).where(
                        auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at.is_(None)
                    )
                )
            ).scalar()
            order_count = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(orders)
                    .where(orders.c.user_id == user_id)
                )
            ).scalar_one()
            line_count = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(order_lines.join(orders, orders.c.id == order_lines.c.order_id))
                    .where(orders.c.user_id == user_id)
                )
            ).scalar_one()
            if (
                session_id is not None
                and order_count == CUSTOMER_ORDERS
                and line_count == CUSTOMER_ORDERS * LINES_PER_ORDER
            ):
                return int(user_id), str(session_id), True
            raise DatasetError(
                f"{CUSTOMER_EMAIL} exists with {order_count} orders / {line_count} lines: "
                "the database was changed by hand; rerun with --rebuild"
            )
        wanted = CUSTOMER_ORDERS * LINES_PER_ORDER
        picked = (
            await conn.execute(
                sa.select(
                    variants.c.id,
                    variants.c.sku,
                    variants.c.name,
                    variants.c.price_amount,
                    variants.c.currency,
                    products.c.name.label("product_name"),
                )
                .join(products, products.c.id == variants.c.product_id)
                .order_by(variants.c.id)
                .limit(wanted)
            )
        ).all()
    if len(picked) < wanted:
        raise DatasetError(f"the catalog has fewer than {wanted} variants")
    password_hash = await Passwords().hash(secrets.token_urlsafe(16))
    session_id = secrets.token_hex(16)
    async with db.transaction() as conn:
        now = datetime.now(UTC)
        user_id = (
            await conn.execute(
                users.insert()
                .values(
                    email=CUSTOMER_EMAIL,
                    password_hash=password_hash,
                    first_name="Bench",
                    last_name="Customer",
                    date_joined=ORDERS_START - timedelta(days=30),
                    updated_at=now,
                )
                .returning(users.c.id)
            )
        ).scalar_one()
        await conn.execute(
            auth_sessions.insert().values(id=session_id, user_id=user_id, created_at=now)
        )
        for i in range(CUSTOMER_ORDERS):
            chosen = picked[i * LINES_PER_ORDER : (i + 1) * LINES_PER_ORDER]
            quantities = [1 + (i + j) % 3 for j in range(LINES_PER_ORDER)]
            subtotal = sum(v.price_amount * q for v, q in zip(chosen, quantities, strict=True))
            shipping = 599
            when = ORDERS_START + timedelta(days=3 * i, minutes=17 * i)
            order_id = (
                await conn.execute(
                    orders.insert()
                    .values(
                        number=f"bench-{secrets.token_hex(6)}",
                        user_id=user_id,
                        email=CUSTOMER_EMAIL,
                        status="FULFILLED" if i < CUSTOMER_ORDERS - 3 else "UNFULFILLED",
                        payment_status="PAID",
                        currency=chosen[0].currency,
                        subtotal_amount=subtotal,
                        shipping_amount=shipping,
                        discount_amount=0,
                        total_amount=subtotal + shipping,
                        shipping_method_name="Standard",
                        created_at=when,
                        updated_at=when,
                    )
                    .returning(orders.c.id)
                )
            ).scalar_one()
            await conn.execute(
                orders.update().where(orders.c.id == order_id).values(number=str(10_000 + order_id))
            )
            await conn.execute(
                order_lines.insert(),
                [
                    {
                        "order_id": order_id,
                        "variant_id": v.id,
                        "product_name": v.product_name,
                        "variant_name": v.name,
                        "sku": v.sku,
                        "quantity": q,
                        "quantity_fulfilled": q if i < CUSTOMER_ORDERS - 3 else 0,
                        "unit_amount": v.price_amount,
                        "total_amount": v.price_amount * q,
                        "currency": v.currency,
                    }
                    for v, q in zip(chosen, quantities, strict=True)
                ],
            )
    return int(user_id), session_id, False


async def _first_product_slug(db: Any) -> str:
    from models.catalog.tables import products

    async with db.read() as conn:
        slug = (
            await conn.execute(
                sa.select(products.c.slug)
                .where(products.c.is_published.is_(True))
                .order_by(products.c.created_at.desc(), products.c.id.desc())
                .limit(1)
            )
        ).scalar()
    if slug is None:
        raise DatasetError("the catalog has no published product")
    return str(slug)


async def prepare(url: str, *, products: int, rebuild: bool = False) -> Dataset:
    from models.db import Database

    is_sqlite = url.startswith("sqlite")
    print(f"Preparing {url} ({products} products)...", file=sys.stderr)
    if is_sqlite and rebuild:
        _remove_sqlite(url)
    elif not is_sqlite:
        await _pg_create(url, drop=rebuild)
    _shopql(url, "migrate")
    count = await _count_products(url)
    reused = count == products
    if count and not reused:
        print(f"  it holds {count} products, not {products}: rebuilding", file=sys.stderr)
        if is_sqlite:
            _remove_sqlite(url)
        else:
            await _pg_create(url, drop=True)
        _shopql(url, "migrate")
    if not reused:
        _shopql(url, "seed", "--products", str(products), "--seed", str(SEED))
    db = Database(url, pool_size=2)
    try:
        user_id, session_id, customer_reused = await _customer(db)
        fresh = not (reused and customer_reused)
        if not is_sqlite:
            autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
            async with autocommit.connect() as conn:
                if fresh:
                    print("  VACUUM ANALYZE", file=sys.stderr)
                    await conn.exec_driver_sql("VACUUM ANALYZE")
                for statement in POSTGRAPHILE_FUNCTIONS:
                    await conn.exec_driver_sql(statement)
        elif fresh:
            async with db.transaction() as conn:  # reads are query_only on SQLite
                await conn.exec_driver_sql("ANALYZE")
        backend = await _backend(db)
        slug = await _first_product_slug(db)
    finally:
        await db.dispose()
    print(f"  {'reused' if reused else 'seeded'}: {backend}", file=sys.stderr)
    return Dataset(url, backend, products, user_id, session_id, slug, reused and customer_reused)
