"""GraphQL execution benchmark: graphql-core's stock executor vs schema.execution's fast one.

    .venv/bin/python bench/execution.py [--rounds 7] [--iterations 20] [--e2e-requests 40]
                                        [--products 2000] [--skip-e2e]

1. Execution only: a parsed product listing (`products(first: 100)` with variants, price
   ranges and money) executed by graphql-core's `execute` on the real schema, with the
   arguments strawberry passes (empty middleware manager, strawberry's `is_awaitable`),
   over in-memory records: the root `products` resolver is replaced by one returning a
   prebuilt page, and the variants come from a real DataLoader whose batch function
   answers from memory (so DataLoader futures are awaited as in production). No SQL, no
   parsing, no validation, no HTTP. Both executors run in alternating rounds; each round
   times `--iterations` executions; the report gives the median per execution.
2. End to end: `products(first: 24)` and `products(first: 100)` POSTed to the ASGI app
   in-process (httpx ASGITransport, so no sockets) on a SQLite catalog of `--products`
   products (seeded once at /tmp/shopql-bench-exec-<N>.db), with `SHOPQL_FAST_EXECUTION`
   off and on (one app each); medians per request, alternating rounds.

The machine is shared: keep runs short and repeat them; the medians of alternating rounds
are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphql import execute, parse
from graphql.execution import MiddlewareManager
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

import resolvers.catalog as catalog_resolvers
from models.catalog.queries import ProductRecord, VariantRecord
from models.dataloader import DataLoader
from models.pagination import Edge, Page, PageInfo
from schema import build_schema
from schema.execution import FastExecutionContext

LISTING = """query Listing($first: Int) {
  products(first: $first) {
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      id name slug description
      priceRange { start { amount currency } stop { amount currency } }
      variants { id sku name price { amount currency } quantityAvailable }
    } }
  }
}"""

EXECUTORS: dict[str, type[Any]] = {
    "stock": StrawberryGraphQLCoreExecutionContext,
    "fast": FastExecutionContext,
}


def _records(count: int) -> tuple[list[ProductRecord], dict[int, list[VariantRecord]]]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    products = [
        ProductRecord(
            id=i,
            name=f"Product {i}",
            slug=f"product-{i}",
            description=f"A fine product, number {i}, with a description of some length.",
            is_published=True,
            category_id=None,
            price_min=1000 + i,
            price_max=5000 + i,
            currency="USD",
            created_at=now,
            updated_at=now,
            is_available=True,
        )
        for i in range(1, count + 1)
    ]
    variants = {
        p.id: [
            VariantRecord(
                id=p.id * 10 + v,
                product_id=p.id,
                sku=f"SKU-{p.id}-{v}",
                name=f"Size {v}",
                price_amount=1000 + p.id + v,
                currency="USD",
                quantity=v * 3,
            )
            for v in range(3)
        ]
        for p in products
    }
    return products, variants


class _MemoryCatalog:
    """Stands in for the per-request CatalogLoaders: variants from memory, batched."""

    def __init__(self, variants: dict[int, list[VariantRecord]]) -> None:
        async def batch(keys: list[int]) -> list[list[VariantRecord]]:
            return [variants.get(key, []) for key in keys]

        self.variants_by_product_id: DataLoader[int, list[VariantRecord]] = DataLoader(batch)


class _MemoryContext:
    def __init__(self, variants: dict[int, list[VariantRecord]]) -> None:
        self.catalog = _MemoryCatalog(variants)


async def execution_only(rounds: int, iterations: int, products: int = 100) -> dict[str, float]:
    records, variants = _records(products)
    page = Page(
        [Edge(cursor=f"c{p.id}", node=p) for p in records],
        PageInfo(
            has_next_page=True,
            has_previous_page=False,
            start_cursor="c1",
            end_cursor=f"c{products}",
        ),
        count=lambda: asyncio.sleep(0, products),
    )

    async def in_memory_products(*_args: Any, **_kw: Any) -> Page[ProductRecord]:
        return page

    real_products = catalog_resolvers.products
    catalog_resolvers.products = in_memory_products  # type: ignore[assignment]
    try:
        return await _time_executors(rounds, iterations, products, variants)
    finally:
        catalog_resolvers.products = real_products


async def _time_executors(
    rounds: int, iterations: int, products: int, variants: dict[int, list[VariantRecord]]
) -> dict[str, float]:
    schema = build_schema()._schema  # type: ignore[attr-defined]
    document = parse(LISTING)

    async def run(executor: type[Any]) -> dict[str, Any]:
        result = execute(
            schema,
            document,
            context_value=_MemoryContext(variants),
            variable_values={"first": products},
            middleware=MiddlewareManager(),
            is_awaitable=optimized_is_awaitable,
            executor_class=executor,
            operation_extensions=None,
        )
        if isinstance(result, Awaitable):
            result = await result
        assert not result.errors, result.errors
        return result.data  # type: ignore[no-any-return]

    outputs = [await run(cls) for cls in EXECUTORS.values()]
    assert outputs[0] == outputs[1], "the executors disagree"
    assert len(outputs[0]["products"]["edges"]) == products
    return await _alternate(
        {name: lambda cls=cls: run(cls) for name, cls in EXECUTORS.items()}, rounds, iterations
    )


async def _alternate(
    runs: dict[str, Callable[[], Awaitable[Any]]], rounds: int, iterations: int
) -> dict[str, float]:
    """Median seconds per call, from alternating rounds (after one warm-up round)."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds + 1):
        for name, fn in runs.items():
            start = time.perf_counter()
            for _ in range(iterations):
                await fn()
            if round_:
                samples[name].append((time.perf_counter() - start) / iterations)
    return {name: statistics.median(values) for name, values in samples.items()}


async def _catalog_db(products: int) -> str:
    from models.db import Database
    from models.migrate import upgrade
    from models.seed import seed_catalog

    path = Path(f"/tmp/shopql-bench-exec-{products}.db")
    url = f"sqlite+aiosqlite:///{path}"
    if not await asyncio.to_thread(path.exists):
        db = Database(url)
        try:
            await upgrade(db)
            await seed_catalog(db, products=products, seed=7)
        except BaseException:
            await db.dispose()
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        await db.dispose()
    return url


async def end_to_end(rounds: int, requests: int, products: int) -> dict[str, dict[str, float]]:
    import httpx

    from app import create_app
    from models.db import Database
    from models.settings import Settings

    url = await _catalog_db(products)
    db = Database(url)
    clients: dict[str, httpx.AsyncClient] = {}
    previous = os.environ.get("SHOPQL_FAST_EXECUTION")
    try:
        for name, flag in (("stock", "0"), ("fast", "1")):
            os.environ["SHOPQL_FAST_EXECUTION"] = flag
            settings = Settings(database_url=url, secret_key="x" * 48)
            app = create_app(settings, db=db)
            clients[name] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench.test"
            )
        report: dict[str, dict[str, float]] = {}
        for first in (24, 100):
            payload = {"query": LISTING, "variables": {"first": first}}
            bodies = []
            for client in clients.values():
                response = await client.post("/graphql", json=payload)
                body = response.json()
                assert response.status_code == 200 and "errors" not in body, body
                bodies.append(body)
            assert bodies[0] == bodies[1], "the executors disagree"

            size = len(response.content)

            async def post(
                client: httpx.AsyncClient, payload: dict[str, Any] = payload, size: int = size
            ) -> None:
                response = await client.post("/graphql", json=payload)
                assert response.status_code == 200 and len(response.content) == size

            report[f"products(first: {first})"] = await _alternate(
                {name: lambda c=client: post(c) for name, client in clients.items()},
                rounds,
                requests,
            )
        return report
    finally:
        for client in clients.values():
            await client.aclose()
        await db.dispose()
        if previous is None:
            os.environ.pop("SHOPQL_FAST_EXECUTION", None)
        else:
            os.environ["SHOPQL_FAST_EXECUTION"] = previous


def _line(label: str, medians: dict[str, float]) -> str:
    stock, fast = medians["stock"], medians["fast"]
    return f"| {label} | {stock * 1000:.2f} | {fast * 1000:.2f} | {stock / fast:.2f}x |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--e2e-requests", type=int, default=20)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()

    print("| measure | stock ms | fast ms | stock / fast |")
    print("|---|---:|---:|---:|")
    medians = await execution_only(args.rounds, args.iterations)
    print(_line("execution only, products(first: 100), in-memory records", medians), flush=True)
    medians = await execution_only(args.rounds, args.iterations, products=24)
    print(_line("execution only, products(first: 24), in-memory records", medians), flush=True)
    if not args.skip_e2e:
        report = await end_to_end(args.rounds, args.e2e_requests, args.products)
        for label, medians in report.items():
            print(_line(f"end to end (ASGI, SQLite), {label}", medians), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
