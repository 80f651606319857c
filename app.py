"""shopql: Starlette app factory and the `shopql` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from models.accounts.passwords import Passwords
from models.db import Database
from models.mail import Mailer, SmtpConfig
from models.payments.gateways import DummyGateway, Gateway
from models.payments.stripe_gateway import StripeGateway
from models.payments.webhooks import stripe_webhook
from models.settings import Settings, SettingsError
from models.throttle import MemoryThrottle
from resolvers.context import Services
from schema import build_schema, export_sdl
from schema.http import GraphQLApp

logger = logging.getLogger("shopql")


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Starlette:
    """Build the ASGI app. Tests pass their own settings (and may share a Database)."""
    settings = settings or Settings.from_env()
    database = db or Database(settings.database_url, pool_size=settings.db_pool_size)
    services = create_services(settings, database)
    graphql = GraphQLApp(
        build_schema(debug=settings.debug), db=database, settings=settings, services=services
    )

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> JSONResponse:
        try:
            await asyncio.wait_for(database.ping(), timeout=5)
        except Exception:  # the reason is logged, never returned
            logger.exception("readiness check failed: database unreachable")
            return JSONResponse({"status": "unavailable", "database": "error"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await services.mailer.drain()
        for gateway in services.gateways.values():
            close = getattr(gateway, "aclose", None)
            if close is not None:
                await close()
        if db is None:
            await database.dispose()

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type", "x-request-id"],
                expose_headers=["x-request-id"],
                max_age=600,
            )
        )
    webhooks = []
    if settings.stripe_webhook_secret:
        webhook = stripe_webhook(database, secret=settings.stripe_webhook_secret)
        webhooks.append(Route("/webhooks/stripe", webhook, methods=["POST"]))
    app = Starlette(
        debug=False,
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *webhooks,
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.db = database
    app.state.settings = settings
    app.state.services = services
    return app


def create_services(settings: Settings, db: Database) -> Services:
    gateways: dict[str, Gateway] = {"dummy": DummyGateway(db)}
    if settings.stripe_secret_key:
        gateways["stripe"] = StripeGateway(settings.stripe_secret_key)
    passwords = Passwords(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        concurrency=settings.hash_concurrency,
    )
    passwords.dummy_hash()  # now, not during the first sign-in of an unknown email
    return Services(
        passwords=passwords,
        login_throttle=MemoryThrottle(
            limit=settings.login_max_failures, window=settings.login_window
        ),
        mailer=Mailer(
            db,
            sender=settings.mail_from,
            smtp=SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None,
        ),
        gateways=gateways,
    )


def create_app_from_env() -> Starlette:
    """uvicorn factory for `--workers N` and `--reload`."""
    return create_app(Settings.from_env())


# --------------------------------------------------------------------------- CLI


async def _prepare(settings: Settings, *, demo: bool, products: int, seed: int) -> None:
    from models.migrate import upgrade
    from models.seed import catalog_is_empty, seed_catalog

    db = Database(settings.database_url)
    try:
        await upgrade(db)
        if demo and await catalog_is_empty(db):
            print(f"Seeding a demo catalog of {products} products...", file=sys.stderr)
            await seed_catalog(
                db, products=products, seed=seed, currency=settings.currency, progress=True
            )
    finally:
        await db.dispose()


async def _seed(settings: Settings, *, products: int, seed: int) -> None:
    from models.seed import seed_catalog

    db = Database(settings.database_url)
    try:
        summary = await seed_catalog(
            db, products=products, seed=seed, currency=settings.currency, progress=True
        )
        print(
            f"Seeded {summary.products} products, {summary.variants} variants, "
            f"{summary.categories} categories, {summary.collections} collections.",
            file=sys.stderr,
        )
    finally:
        await db.dispose()


async def _migrate(settings: Settings) -> None:
    from models.migrate import upgrade

    db = Database(settings.database_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def _recover(settings: Settings, *, minutes: int) -> dict[str, int]:
    from datetime import timedelta

    from resolvers.checkout import recover_stale

    db = Database(settings.database_url)
    services = create_services(settings, db)
    try:
        return await recover_stale(db, services.gateways, older_than=timedelta(minutes=minutes))
    finally:
        await db.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise SystemExit("shopql: no terminal to prompt on; pass --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise SystemExit("shopql: the passwords do not match")
    return first


async def _create_admin(
    settings: Settings, *, email: str, password: str, first: str, last: str
) -> int:
    from models.accounts.queries import EmailTaken, create_user
    from models.accounts.tables import PERMISSIONS
    from models.migrate import upgrade

    db = Database(settings.database_url)
    try:
        await upgrade(db)
        password_hash = await create_services(settings, db).passwords.hash(password)
        async with db.transaction() as conn:
            return await create_user(
                conn,
                email=email,
                password_hash=password_hash,
                first_name=first,
                last_name=last,
                is_staff=True,
                permissions=PERMISSIONS,
            )
    except EmailTaken:
        raise SystemExit(f"shopql: an account with the email {email} exists already") from None
    finally:
        await db.dispose()


def _create_admin_command(settings: Settings, args: argparse.Namespace) -> int:
    from models.accounts.passwords import PasswordPolicyError, check_policy
    from resolvers.accounts import normalize_email

    email = normalize_email(args.email)
    if not isinstance(email, str):
        print(f"shopql: {email.message}", file=sys.stderr)
        return 2
    password = _read_password(args.password_stdin)
    try:
        check_policy(password)
    except PasswordPolicyError as exc:
        print(f"shopql: {exc.message}", file=sys.stderr)
        return 2
    user_id = asyncio.run(
        _create_admin(
            settings, email=email, password=password, first=args.first_name, last=args.last_name
        )
    )
    print(f"Created staff user {email} (id {user_id}) with every permission.", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopql", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, seed demo data when empty, and serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.add_argument("--no-demo", action="store_true", help="do not seed demo data")
    serve.add_argument("--demo-products", type=int, default=500, metavar="N")
    sub.add_parser("migrate", help="apply database migrations")
    seed = sub.add_parser("seed", help="generate a deterministic demo catalog")
    seed.add_argument("--products", type=int, default=500, metavar="N")
    seed.add_argument("--seed", type=int, default=42, metavar="S")
    sub.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    recover = sub.add_parser(
        "recover-checkouts",
        help="settle checkout completions abandoned mid-way (run from cron)",
    )
    recover.add_argument("--older-than-minutes", type=int, default=15, metavar="M")
    admin = sub.add_parser("create-admin", help="create a staff user with every permission")
    admin.add_argument("--email", required=True)
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    admin.add_argument("--first-name", default="")
    admin.add_argument("--last-name", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "export-schema":
        sys.stdout.write(export_sdl())
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"shopql: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("Database is up to date.", file=sys.stderr)
        return 0
    if args.command == "recover-checkouts":
        counts = asyncio.run(_recover(settings, minutes=max(1, args.older_than_minutes)))
        print(
            f"Recovered checkouts: {counts['completed']} completed, {counts['released']} "
            f"released, {counts['skipped']} left for manual review.",
            file=sys.stderr,
        )
        return 0
    if args.command == "create-admin":
        return _create_admin_command(settings, args)
    if args.command == "seed":
        from models.seed import SeedError

        if not 1 <= args.products <= 1_000_000:
            print("shopql: --products must be between 1 and 1000000", file=sys.stderr)
            return 2
        asyncio.run(_migrate(settings))
        try:
            asyncio.run(_seed(settings, products=args.products, seed=args.seed))
        except SeedError as exc:
            print(f"shopql: {exc}", file=sys.stderr)
            return 1
        return 0
    # serve
    import uvicorn

    asyncio.run(_prepare(settings, demo=not args.no_demo, products=args.demo_products, seed=42))
    if args.workers > 1 and settings.database_url.startswith("sqlite"):
        logger.warning("several workers share one SQLite file; use PostgreSQL to scale out")
    print(f"shopql: GraphQL API at http://{args.host}:{args.port}/graphql", file=sys.stderr)
    uvicorn.run(
        "app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers if not args.reload else None,
        reload=args.reload,
        log_level="info",
        proxy_headers=True,
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
