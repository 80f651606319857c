"""Fixtures: a seeded catalog database (SQLite, or PostgreSQL with TEST_DATABASE_URL) and
an HTTP client over the ASGI app.

The seeded catalog is built once per run and shared by read-only tests (`catalog_db`);
tests that write get a private copy (`fresh_db`): a file copy on SQLite, a database
created from a template on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app import create_app
from models.db import Database
from models.migrate import upgrade
from models.seed import seed_catalog
from models.settings import DEFAULT_GRAPHIQL_ASSETS_DIR, Settings
from schema import graphiql
from schema.graphiql import AssetsError

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
CATALOG_PRODUCTS = 150
CATALOG_SEED = 7
PG_PREFIX = "shopql_t_"
# This run's databases carry its process ID, so runs on one server do not drop each other's.
RUN_PREFIX = f"{PG_PREFIX}{os.getpid()}_"
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class _PgCopies:
    """PostgreSQL copies of a source database made ahead, and dropped behind, by one
    background thread with its own connection: a test that writes takes a copy already
    made and leaves its drop to the thread, instead of waiting on CREATE DATABASE and
    DROP DATABASE (0.2 to 0.7 s together on a loaded 2-core machine, for hundreds of
    tests). The source is never connected to, so it can be copied at any time."""

    AHEAD = 2

    def __init__(self, server_url: str, source: str) -> None:
        self.admin = make_url(server_url).set(drivername="postgresql+asyncpg", database="postgres")
        self.source = source
        self.ready: queue.Queue[str] = queue.Queue()
        self.drops: queue.Queue[str | None] = queue.Queue()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pg-copies", daemon=True)
        self.thread.start()

    def take(self) -> str:
        while True:
            try:
                return self.ready.get(timeout=0.5)
            except queue.Empty:
                if self.failure is not None:
                    raise RuntimeError("making database copies failed") from self.failure
                if not self.thread.is_alive():
                    raise RuntimeError("the database copy thread has stopped") from None

    def drop(self, name: str) -> None:
        self.drops.put(name)

    def close(self) -> None:
        """Stop the thread once every queued drop is done (copies still ready are left to
        `_pg_cleanup`)."""
        self.drops.put(None)
        self.thread.join(timeout=120)

    def _run(self) -> None:
        try:
            asyncio.run(self._work())
        except BaseException as exc:  # reported by `take`
            self.failure = exc

    async def _work(self) -> None:
        engine = sa.ext.asyncio.create_async_engine(self.admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                while (name := self._next()) is not None:
                    if name:
                        await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                        continue
                    copy = f"{RUN_PREFIX}{uuid.uuid4().hex[:12]}"
                    await conn.exec_driver_sql(f'CREATE DATABASE "{copy}" TEMPLATE "{self.source}"')
                    self.ready.put(copy)
        finally:
            await engine.dispose()

    def _next(self) -> str | None:
        """The next thing to do (this thread only waits for it): a database to drop
        (drops first: they free what copies use), "" for a copy to make, None to stop."""
        while True:
            try:
                return self.drops.get_nowait()
            except queue.Empty:
                pass
            if self.ready.qsize() < self.AHEAD:
                return ""
            try:
                return self.drops.get(timeout=0.05)
            except queue.Empty:
                continue


@dataclass(frozen=True)
class DatabaseFactory:
    """Knows the seeded template and how to hand out copies of it."""

    template_url: str
    workdir: Path
    copies: _PgCopies | None = None  # PostgreSQL

    @property
    def is_postgres(self) -> bool:
        return self.template_url.startswith("postgresql")

    def copy(self) -> str:
        if self.copies is None:
            target = self.workdir / f"{uuid.uuid4().hex}.db"
            shutil.copyfile(make_url(self.template_url).database or "", target)
            return f"sqlite+aiosqlite:///{target}"
        name = self.copies.take()
        return str(make_url(self.template_url).set(database=name).render_as_string(False))

    def drop(self, url: str) -> None:
        if self.copies is not None:
            self.copies.drop(make_url(url).database or "")
        else:
            Path(make_url(url).database or "").unlink(missing_ok=True)


def _pg_admin(url: str, *statements: str) -> None:
    """Run statements on the server's maintenance database (autocommit)."""
    admin = make_url(url).set(drivername="postgresql+asyncpg", database="postgres")

    async def run() -> None:
        engine = sa.ext.asyncio.create_async_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _left_behind(name: str) -> bool:
    """A test database of this run, or of a run whose process is gone."""
    pid_text = name[len(PG_PREFIX) :].split("_", 1)[0]
    if not pid_text.isdigit():
        return True  # an older naming scheme
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _pg_cleanup(url: str) -> None:
    """Drop what this run and dead earlier runs left behind, so every run starts from a
    clean database while concurrent runs on the same server keep theirs."""
    admin = make_url(url).set(database="postgres")

    async def names() -> list[str]:
        engine = sa.ext.asyncio.create_async_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                rows = await conn.exec_driver_sql(
                    f"SELECT datname FROM pg_database WHERE datname LIKE '{PG_PREFIX}%'"
                )
                return [row[0] for row in rows]
        finally:
            await engine.dispose()

    stale = [name for name in asyncio.run(names()) if _left_behind(name)]
    if stale:
        _pg_admin(url, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in stale))


async def _build(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
        await seed_catalog(db, products=CATALOG_PRODUCTS, seed=CATALOG_SEED)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    workdir = tmp_path_factory.mktemp("db")
    if TEST_DATABASE_URL:
        _pg_cleanup(TEST_DATABASE_URL)
        name = f"{RUN_PREFIX}catalog_{uuid.uuid4().hex[:8]}"
        _pg_admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(False)
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'catalog.db'}"
    asyncio.run(_build(url))
    copies = None
    if TEST_DATABASE_URL:  # the copies' source: the seeded catalog, never connected to
        source = f"{RUN_PREFIX}source_{uuid.uuid4().hex[:8]}"
        _pg_admin(TEST_DATABASE_URL, f'CREATE DATABASE "{source}" TEMPLATE "{name}"')
        copies = _PgCopies(TEST_DATABASE_URL, source)
    factory = DatabaseFactory(url, workdir, copies)
    yield factory
    if copies is not None:
        copies.close()
        _pg_cleanup(TEST_DATABASE_URL)


@pytest.fixture
def catalog_url(databases: DatabaseFactory) -> str:
    """The shared seeded catalog: read it, never write it."""
    return databases.template_url


@pytest.fixture
def fresh_url(databases: DatabaseFactory) -> Iterator[str]:
    """A private copy of the seeded catalog for a test that writes."""
    url = databases.copy()
    yield url
    databases.drop(url)


@pytest.fixture
async def catalog_db(catalog_url: str) -> AsyncIterator[Database]:
    db = Database(catalog_url)
    yield db
    await db.dispose()


@pytest.fixture
async def fresh_db(fresh_url: str) -> AsyncIterator[Database]:
    db = Database(fresh_url)
    yield db
    await db.dispose()


class AppClient(httpx.AsyncClient):
    """An HTTP client over the ASGI app that, on close, waits for the app's background
    work (mail being sent) as the app's shutdown would."""

    def __init__(self, app: Any) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")
        self.app = app

    async def __aexit__(self, *exc: Any) -> None:
        await self.app.state.services.mailer.drain()
        await super().__aexit__(*exc)


def make_client(db: Database, **settings: Any) -> AppClient:
    # Rate limiting off unless a test asks for it (tests/test_rate_limit.py does): tests
    # fire many expensive operations from one address.
    options: dict[str, Any] = {
        "database_url": db.url,
        "debug": True,
        "secret_key": TEST_SECRET,
        "rate_limit": 0,
    }
    options.update(settings)
    return AppClient(create_app(Settings(**options), db=db))


@pytest.fixture
async def client(catalog_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(catalog_db) as c:
        yield c


GraphQL = Callable[..., Awaitable[dict[str, Any]]]


def graphql_caller(client: httpx.AsyncClient) -> GraphQL:
    async def call(
        query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        response = await client.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if not kw.get("errors", False):
            assert "errors" not in body, body["errors"]
        return body

    return call


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQL:
    """POST a query; fails the test on any error unless called with errors=True."""
    return graphql_caller(client)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (TEST_REDIS_URL, default the local one). Missing Redis skips the
    test locally and fails it in CI, where Redis always runs."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis is required in CI ({REDIS_URL}): {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A namespace of Redis keys and channels no other test (or test run) shares."""
    return f"shopqltest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The project's installed assets (CI's .ci/run installs them before the tests; a
    developer's first run fetches them like `shopql graphiql-assets`)."""
    dest = graphiql.assets_dir(
        os.environ.get("SHOPQL_GRAPHIQL_ASSETS_DIR") or str(ROOT / DEFAULT_GRAPHIQL_ASSETS_DIR)
    )
    try:
        graphiql.install(dest)
    except AssetsError as exc:
        if IN_CI:
            pytest.fail(f"GraphiQL assets missing and not fetchable: {exc}")
        pytest.skip(f"GraphiQL assets missing and not fetchable (offline?): {exc}")
    return dest
