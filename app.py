"""shopql: Starlette app factory and the `shopql` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from models import redis_backend, telemetry
from models.accounts.passwords import Passwords
from models.db import Database
from models.logs import configure_logging, logging_config
from models.mail import Mailer, SmtpConfig
from models.payments.gateways import DummyGateway, Gateway
from models.payments.stripe_gateway import StripeGateway
from models.payments.webhooks import stripe_webhook
from models.settings import Settings, SettingsError, graphiql_assets_dir_from_env
from models.telemetry import Metrics, otlp_tracer_provider
from models.throttle import MemoryThrottle, Throttle
from models.webhooks.worker import WebhookWorker
from resolvers.context import Services
from schema import build_schema, export_sdl, graphiql
from schema.cors import CredentialedCORSMiddleware
from schema.http import GraphQLApp
from schema.observability import (
    ObservabilityMiddleware,
    Tracing,
    metrics_endpoint,
    readyz_endpoint,
    run_checks,
)

logger = logging.getLogger("shopql")


class ShopApp(Starlette):
    """Starlette, with HTTP requests to /graphql handed straight to the GraphQL app inside
    the same middleware (`graphql_http`): past Starlette's error and exception middleware
    and its router, which that app has no use for (it answers every method, refusal and
    failure itself). WebSockets, other paths and a mounted app (a root_path) go the usual
    way."""

    graphql_http: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        graphql_http = self.graphql_http
        if graphql_http is not None and scope["type"] == "http" and scope["path"] == "/graphql":
            scope["app"] = self
            await graphql_http(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    tracer_provider: Any = None,
) -> Starlette:
    """Build the ASGI app. Tests pass their own settings (and may share a Database, or
    trace into their own OpenTelemetry TracerProvider)."""
    settings = settings or Settings.from_env()
    database = db or Database(settings.database_url, pool_size=settings.db_pool_size)
    services = create_services(settings, database)
    metrics = Metrics() if settings.metrics else None
    own_provider = tracer_provider is None and settings.otel_endpoint is not None
    if own_provider and settings.otel_endpoint is not None:
        tracer_provider = otlp_tracer_provider(settings.otel_endpoint)
    tracing = Tracing(tracer_provider) if tracer_provider is not None else None
    graphql = GraphQLApp(
        build_schema(debug=settings.debug, limits=settings.query_limits),
        db=database,
        settings=settings,
        services=services,
        tracing=tracing,
    )

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Background tasks started here (webhook deliveries) record into this app's metrics.
        active = telemetry.activate(metrics) if metrics is not None else None
        webhook_worker = None
        if settings.webhook_worker:  # delivers the webhook outbox in the background
            webhook_worker = WebhookWorker(database, allow_private=settings.webhook_allow_private)
            webhook_worker.start()
        relay = None
        if services.redis is not None:  # events from every process reach our subscribers
            relay = redis_backend.RedisEventRelay(
                database.events, services.redis, channel=f"{settings.redis_prefix}:events"
            )
            await relay.start()
        if settings.gc_freeze:
            # What exists now lives as long as the process: spare every full collection
            # the walk over it (~100 ms each with the schema; once per ~40 requests).
            gc.collect()
            gc.freeze()
        thresholds = gc.get_threshold()
        if settings.gc_threshold is not None:
            gc.set_threshold(settings.gc_threshold, *thresholds[1:])
        yield
        if settings.gc_threshold is not None:
            gc.set_threshold(*thresholds)  # as it was (an app built in-process)
        if relay is not None:
            await relay.stop()
        if webhook_worker is not None:
            await webhook_worker.stop()
        await services.mailer.drain()
        if services.redis is not None:
            await services.redis.aclose()
        for gateway in services.gateways.values():
            close = getattr(gateway, "aclose", None)
            if close is not None:
                await close()
        if db is None:
            await database.dispose()
        if active is not None:
            telemetry.deactivate(active)
        if metrics is not None:
            metrics.close()
        if own_provider:
            await asyncio.to_thread(tracer_provider.shutdown)  # flushes pending spans

    middleware = []
    if settings.access_log or metrics is not None:
        middleware.append(
            Middleware(ObservabilityMiddleware, metrics=metrics, access_log=settings.access_log)
        )
    if settings.cors_origins:
        middleware.append(Middleware(CredentialedCORSMiddleware, origins=settings.cors_origins))
    webhooks = []
    if settings.stripe_webhook_secret:
        webhook = stripe_webhook(database, secret=settings.stripe_webhook_secret)
        webhooks.append(Route("/webhooks/stripe", webhook, methods=["POST"]))
    ide: list[BaseRoute] = []
    if settings.graphiql_enabled:  # GraphiQL's own scripts and stylesheet, no CDN
        ide.append(Route(graphiql.ASSETS_ROUTE, graphiql.asset_endpoint(graphql.graphiql_assets)))
    operations: list[BaseRoute] = []
    if metrics is not None:
        operations.append(Route("/metrics", metrics_endpoint(metrics, settings.metrics_token)))
    app = ShopApp(
        debug=False,
        routes=[
            Route("/graphql", graphql),  # every method: GraphQLApp answers 405 itself, in JSON
            WebSocketRoute("/graphql", graphql),
            *ide,
            Route("/healthz", healthz),
            Route("/readyz", readyz_endpoint(database)),
            *operations,
            *webhooks,
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.graphql_http = graphql
    for entry in reversed(middleware):  # as Starlette wraps its router
        app.graphql_http = entry.cls(app.graphql_http, *entry.args, **entry.kwargs)
    app.state.db = database
    app.state.settings = settings
    app.state.services = services
    app.state.metrics = metrics
    app.state.tracing = tracing
    app.state.graphql = graphql  # the GraphQL view (tests switch its direct POST path)
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
    redis = redis_backend.connect(settings.redis_url) if settings.redis_url else None
    login_throttle: Throttle
    if redis is not None:  # shared by every process and host
        login_throttle = redis_backend.RedisThrottle(
            redis,
            limit=settings.login_max_failures,
            window=settings.login_window,
            prefix=f"{settings.redis_prefix}:throttle:login:",
        )
    else:
        login_throttle = MemoryThrottle(
            limit=settings.login_max_failures, window=settings.login_window
        )
    return Services(
        passwords=passwords,
        login_throttle=login_throttle,
        redis=redis,
        mailer=Mailer(
            db,
            sender=settings.mail_from,
            smtp=SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None,
        ),
        gateways=gateways,
    )


def create_app_from_env() -> Starlette:
    """uvicorn factory for `--workers N` and `--reload`."""
    settings = Settings.from_env()
    if not logging.getLogger().handlers:  # started by a bare `uvicorn ... --factory`
        configure_logging(settings)
    return create_app(settings)


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


async def _webhook_worker(settings: Settings) -> None:
    """Deliver the webhook outbox until SIGTERM / SIGINT (beside servers that run with
    SHOPQL_WEBHOOK_WORKER=0, or as extra capacity: workers share the outbox safely)."""
    import signal

    db = Database(settings.database_url)
    worker = WebhookWorker(db, allow_private=settings.webhook_allow_private)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    print("shopql: delivering webhooks (Ctrl-C to stop)", file=sys.stderr)
    try:
        await stop.wait()
    finally:
        await worker.stop()
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
    serve.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=20,
        metavar="S",
        help="on SIGTERM, seconds to let in-flight requests finish (default 20)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="proxies trusted for X-Forwarded-For/-Proto (default: $FORWARDED_ALLOW_IPS "
        "or 127.0.0.1)",
    )
    sub.add_parser("check", help="check the configuration, database, migrations and Redis")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("worker", help="deliver webhooks (for servers run with SHOPQL_WEBHOOK_WORKER=0)")
    seed = sub.add_parser("seed", help="generate a deterministic demo catalog")
    seed.add_argument("--products", type=int, default=500, metavar="N")
    seed.add_argument("--seed", type=int, default=42, metavar="S")
    sub.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    assets = sub.add_parser(
        "graphiql-assets",
        help="install GraphiQL's browser files from the npm registry (pinned, verified) "
        "into $SHOPQL_GRAPHIQL_ASSETS_DIR",
    )
    assets.add_argument("--force", action="store_true", help="download them again")
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
    imports = sub.add_parser(
        "import-products",
        help="create or update products and variants from a CSV file (format: see README)",
    )
    imports.add_argument("file", metavar="FILE.csv")
    imports.add_argument("--batch-size", type=int, default=2000, metavar="ROWS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "export-schema":
        sys.stdout.write(export_sdl())
        return 0
    if args.command == "check":
        return _check_command()
    if args.command == "graphiql-assets":  # needs no other setting (CI runs it bare)
        return graphiql.install_command(graphiql_assets_dir_from_env(), force=args.force)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"shopql: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
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
    if args.command == "worker":
        asyncio.run(_webhook_worker(settings))
        return 0
    if args.command == "import-products":
        from models.catalog.importer import run_cli

        asyncio.run(_migrate(settings))
        return run_cli(
            settings.database_url, args.file, currency=settings.currency, batch_rows=args.batch_size
        )
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
    return _serve(settings, args)


def _stop(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate, seed, serve. SIGTERM: uvicorn stops accepting, lets in-flight requests
    finish (--timeout-graceful-shutdown), runs the app's shutdown (webhooks, mail, database
    pool), and the process exits 0."""
    import shutil
    import tempfile

    import uvicorn

    from schema.persisted import load_manifest

    if settings.trusted_documents:  # each worker loads it; refuse a bad one here, once
        try:
            load_manifest(settings.trusted_documents)
        except SettingsError as exc:
            print(f"shopql: configuration error: {exc}", file=sys.stderr)
            return 2
    # uvicorn re-raises the SIGTERM it handled once it has drained; this handler turns that
    # (and a SIGTERM before serving starts) into a clean exit.
    signal.signal(signal.SIGTERM, _stop)
    asyncio.run(_prepare(settings, demo=not args.no_demo, products=args.demo_products, seed=42))
    if settings.graphiql_enabled:  # fetched once; without them the page says what to run
        graphiql.ensure_installed(graphiql.assets_dir(settings.graphiql_assets_dir))
    workers = args.workers if not args.reload else None
    if args.workers > 1 and settings.database_url.startswith("sqlite"):
        logger.warning("several workers share one SQLite file; use PostgreSQL to scale out")
    metrics_dir = None
    if settings.metrics and (workers or 1) > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are fresh processes: they read this before importing prometheus_client.
        metrics_dir = tempfile.mkdtemp(prefix="shopql-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(f"shopql: GraphQL API at http://{args.host}:{args.port}/graphql", file=sys.stderr)
    try:
        uvicorn.run(
            "app:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=workers,
            reload=args.reload,
            log_config=logging_config(settings),
            log_level=settings.log_level.lower(),
            access_log=not settings.access_log,  # ours (shopql.access) replaces uvicorn's
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,
            http="schema.server:HttpProtocol",  # headers and body in one write
            timeout_graceful_shutdown=max(1, args.timeout_graceful_shutdown),
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _check_command() -> int:
    """`shopql check`: one line per check; exit 1 when any fails."""
    checks = asyncio.run(run_checks())
    width = max(len(check.name) for check in checks)
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark}  {check.name:<{width}}  {check.detail}")
    failed = [check.name for check in checks if not check.ok]
    if failed:
        print(f"shopql check: {len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        return 1
    print(f"shopql check: all {len(checks)} checks passed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
