"""Configuration, read once from the environment into one object passed to create_app()."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./shopql.db"
DEFAULT_GRAPHIQL_ASSETS_DIR = ".shopql/graphiql"
# Only ever accepted in debug mode; production refuses to start without a real SECRET_KEY.
DEVELOPMENT_SECRET_KEY = "shopql-development-secret-key-never-use-in-production"
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_BODY_BYTES = 1024
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_REQUEST_TIMEOUT = 3600
# A browser's Origin header: scheme://host[:port], lower case, no path.
_ORIGIN = re.compile(r"https?://([a-z0-9.\-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A configuration value the server refuses to start with."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float
) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan and inf
        raise SettingsError(f"{name} must be between {low:g} and {high:g} seconds, got {raw!r}")
    return value


def graphiql_assets_dir_from_env(env: Mapping[str, str] | None = None) -> str:
    """`SHOPQL_GRAPHIQL_ASSETS_DIR`: read on its own too, by `shopql graphiql-assets`, which
    needs no other setting."""
    env = os.environ if env is None else env
    return env.get("SHOPQL_GRAPHIQL_ASSETS_DIR", "").strip() or DEFAULT_GRAPHIQL_ASSETS_DIR


def fast_execution_enabled(env: Mapping[str, str] | None = None) -> bool:
    """`SHOPQL_FAST_EXECUTION` (default on): 0 runs every field through graphql-core's stock
    executor (schema.execution is the fast one)."""
    return _flag(os.environ if env is None else env, "SHOPQL_FAST_EXECUTION", True)


@dataclass(frozen=True)
class QueryLimits:
    """Abuse limits checked before a GraphQL operation runs (schema.limits; README "Limits")."""

    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000
    max_cost: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QueryLimits:
        env = os.environ if env is None else env
        return cls(
            max_depth=_int(env, "SHOPQL_MAX_DEPTH", 10, low=1, high=1000),
            max_aliases=_int(env, "SHOPQL_MAX_ALIASES", 15, low=1, high=10_000),
            max_tokens=_int(env, "SHOPQL_MAX_TOKENS", 2000, low=1, high=1_000_000),
            max_cost=_int(env, "SHOPQL_MAX_COST", 1000, low=1, high=1_000_000_000),
        )


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    debug: bool = False
    cors_origins: tuple[str, ...] = ()
    currency: str = "USD"
    db_pool_size: int = 10
    graphiql: bool | None = None  # None: on in debug, off otherwise
    # Where `shopql graphiql-assets` installs GraphiQL's browser files (relative: to the
    # working directory); the server serves them from there.
    graphiql_assets_dir: str = DEFAULT_GRAPHIQL_ASSETS_DIR
    secret_key: str = field(default=DEVELOPMENT_SECRET_KEY, repr=False)
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 30 * 24 * 3600
    password_reset_ttl: int = 3600
    login_max_failures: int = 10
    login_window: int = 15 * 60
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    hash_concurrency: int = 2
    smtp_url: str | None = field(default=None, repr=False)  # may hold a password
    mail_from: str = "shop@localhost"
    password_reset_url: str | None = None
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    # Outbound webhooks: deliver to private/loopback addresses (development and tests only),
    # and run the delivery worker inside the server (off: run `shopql worker` instead).
    webhook_allow_private: bool = False
    webhook_worker: bool = True
    fast_execution: bool = True  # schema.execution: trivial fields completed inline
    # Move everything alive once the app has started (schema, modules, pools) out of the
    # garbage collector's sight (gc.freeze): full collections then scan only what requests
    # create. SHOPQL_GC_FREEZE, on for a server started from the environment (`shopql
    # serve`); off for apps built in-process (a test suite builds hundreds).
    gc_freeze: bool = False
    # The collector's first-generation threshold (gc.set_threshold), None: Python's (700).
    # A request builds thousands of short-lived objects and leaves no cycles
    # (tests/test_gc_cycles.py): at 700 the collector ran about once per request, walking
    # objects still in use. SHOPQL_GC_THRESHOLD, 10000 for a server from the environment.
    gc_threshold: int | None = None
    # Operations (README "Operations"): metrics, logs, tracing, readiness.
    metrics: bool = False
    metrics_token: str | None = field(default=None, repr=False)
    log_format: str | None = None  # None: text in debug, JSON lines otherwise
    log_level: str = "INFO"
    access_log: bool = True
    otel_endpoint: str | None = None
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_prefix: str = "shopql"  # namespace of shopql's Redis keys and channel
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    ws_max_subscriptions: int = 20  # operations open at once on one WebSocket
    # Persisted queries and rate limiting (schema/persisted.py, models/ratelimit.py).
    trusted_documents: str | None = None  # manifest path: only its documents run
    apq_cache_size: int = 10_000  # documents kept in process memory (without Redis)
    apq_ttl: int = 7 * 86400  # seconds a document stays in Redis
    rate_limit: int = 30_000  # cost points per client per minute; 0: off
    rate_limit_burst: int = 10_000  # points a client may spend at once
    # HTTP transport (schema/transport.py, README "HTTP"): body cap, operation deadline,
    # introspection (None: on in debug, off otherwise).
    max_body_bytes: int = 102_400
    request_timeout: float = 30.0
    introspection: bool | None = None

    def __post_init__(self) -> None:
        if "*" in self.cors_origins:
            raise SettingsError(
                "SHOPQL_CORS_ORIGINS may not be '*': the API sends credentials, so list "
                "the allowed origins explicitly"
            )
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    "SHOPQL_CORS_ORIGINS must list origins as scheme://host[:port] (no path, "
                    f"no trailing slash, lower case), got {origin[:100]!r}"
                )
        if not MIN_BODY_BYTES <= self.max_body_bytes <= MAX_BODY_BYTES:
            raise SettingsError(
                f"SHOPQL_MAX_BODY_BYTES must be between {MIN_BODY_BYTES} and {MAX_BODY_BYTES}, "
                f"got {self.max_body_bytes}"
            )
        if not 0 < self.request_timeout <= MAX_REQUEST_TIMEOUT:
            raise SettingsError(
                f"SHOPQL_REQUEST_TIMEOUT must be more than 0 and at most {MAX_REQUEST_TIMEOUT} "
                f"seconds, got {self.request_timeout}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.redis_prefix):
            raise SettingsError(
                "SHOPQL_REDIS_PREFIX must be 1-64 letters, digits, '_', '.' or '-', got "
                f"{self.redis_prefix[:80]!r}"
            )
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.rate_limit < 0 or self.rate_limit_burst < 1:
            raise SettingsError(
                "SHOPQL_RATE_LIMIT must be 0 (off) or more and SHOPQL_RATE_LIMIT_BURST at least 1"
            )
        if self.apq_cache_size < 1 or self.apq_ttl < 60:
            raise SettingsError(
                "SHOPQL_APQ_CACHE_SIZE must be at least 1 and SHOPQL_APQ_TTL at least 60 seconds"
            )
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise SettingsError(f"SHOPQL_CURRENCY must be an ISO 4217 code, got {self.currency!r}")
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise SettingsError(
                "DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )

        if not self.debug and (
            self.secret_key == DEVELOPMENT_SECRET_KEY or len(self.secret_key) < MIN_SECRET_LENGTH
        ):
            raise SettingsError(
                f"SECRET_KEY must be set to a random value of at least {MIN_SECRET_LENGTH} "
                "characters outside debug mode (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)"
            )
        if self.smtp_url is not None and not self.smtp_url.startswith(("smtp://", "smtps://")):
            raise SettingsError("SHOPQL_SMTP_URL must start with smtp:// or smtps://")
        self._check_operations()

    def _check_operations(self) -> None:
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN_LENGTH:
            raise SettingsError(
                f"SHOPQL_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters"
            )
        if self.metrics and self.metrics_token is None and not self.debug:
            raise SettingsError(
                "SHOPQL_METRICS=1 needs SHOPQL_METRICS_TOKEN outside debug mode: /metrics is "
                "served only to `Authorization: Bearer <token>`, never publicly"
            )
        if self.log_format is not None and self.log_format not in LOG_FORMATS:
            raise SettingsError(f"SHOPQL_LOG_FORMAT must be json or text, got {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"SHOPQL_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.otel_endpoint is not None:
            if not self.otel_endpoint.startswith(("http://", "https://")):
                raise SettingsError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s):// URL")
            if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
                raise SettingsError(
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
                    "pip install 'shopql[otel]'"
                )

    @property
    def graphiql_enabled(self) -> bool:
        return self.debug if self.graphiql is None else self.graphiql

    @property
    def introspection_enabled(self) -> bool:
        return self.debug if self.introspection is None else self.introspection

    @property
    def log_format_effective(self) -> str:
        if self.log_format is not None:
            return self.log_format
        return "text" if self.debug else "json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        origins = tuple(
            o.strip() for o in env.get("SHOPQL_CORS_ORIGINS", "").split(",") if o.strip()
        )
        graphiql_raw = env.get("SHOPQL_GRAPHIQL")
        debug = _flag(env, "SHOPQL_DEBUG", False)
        secret = env.get("SECRET_KEY", "").strip()
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            debug=debug,
            cors_origins=origins,
            currency=env.get("SHOPQL_CURRENCY", "USD").strip().upper() or "USD",
            db_pool_size=_int(env, "SHOPQL_DB_POOL_SIZE", 10, low=1, high=200),
            graphiql=None if graphiql_raw is None else _flag(env, "SHOPQL_GRAPHIQL", False),
            graphiql_assets_dir=graphiql_assets_dir_from_env(env),
            secret_key=secret or (DEVELOPMENT_SECRET_KEY if debug else ""),
            access_token_ttl=_int(env, "SHOPQL_ACCESS_TOKEN_TTL", 900, low=30, high=86400),
            refresh_token_ttl=_int(
                env, "SHOPQL_REFRESH_TOKEN_TTL", 30 * 86400, low=300, high=365 * 86400
            ),
            password_reset_ttl=_int(env, "SHOPQL_PASSWORD_RESET_TTL", 3600, low=300, high=86400),
            login_max_failures=_int(env, "SHOPQL_LOGIN_MAX_FAILURES", 10, low=1, high=1000),
            login_window=_int(env, "SHOPQL_LOGIN_WINDOW", 900, low=1, high=86400),
            argon2_memory_kib=_int(
                env, "SHOPQL_ARGON2_MEMORY_KIB", 19 * 1024, low=19 * 1024, high=1024 * 1024
            ),
            argon2_time_cost=_int(env, "SHOPQL_ARGON2_TIME_COST", 2, low=2, high=20),
            hash_concurrency=_int(env, "SHOPQL_HASH_CONCURRENCY", 2, low=1, high=64),
            smtp_url=env.get("SHOPQL_SMTP_URL") or None,
            mail_from=env.get("SHOPQL_MAIL_FROM", "shop@localhost"),
            password_reset_url=env.get("SHOPQL_PASSWORD_RESET_URL") or None,
            stripe_secret_key=env.get("STRIPE_SECRET_KEY", "").strip() or None,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET", "").strip() or None,
            webhook_allow_private=_flag(env, "SHOPQL_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_worker=_flag(env, "SHOPQL_WEBHOOK_WORKER", True),
            fast_execution=fast_execution_enabled(env),
            gc_freeze=_flag(env, "SHOPQL_GC_FREEZE", True),
            gc_threshold=_int(env, "SHOPQL_GC_THRESHOLD", 10_000, low=0, high=10_000_000) or None,
            metrics=_flag(env, "SHOPQL_METRICS", False),
            metrics_token=env.get("SHOPQL_METRICS_TOKEN", "").strip() or None,
            log_format=env.get("SHOPQL_LOG_FORMAT", "").strip().lower() or None,
            log_level=env.get("SHOPQL_LOG_LEVEL", "").strip().upper() or "INFO",
            access_log=_flag(env, "SHOPQL_ACCESS_LOG", True),
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None,
            redis_url=env.get("REDIS_URL", "").strip() or None,
            redis_prefix=env.get("SHOPQL_REDIS_PREFIX", "").strip() or "shopql",
            query_limits=QueryLimits.from_env(env),
            ws_max_subscriptions=_int(env, "SHOPQL_WS_MAX_SUBSCRIPTIONS", 20, low=1, high=1000),
            trusted_documents=env.get("SHOPQL_TRUSTED_DOCUMENTS", "").strip() or None,
            apq_cache_size=_int(env, "SHOPQL_APQ_CACHE_SIZE", 10_000, low=1, high=1_000_000),
            apq_ttl=_int(env, "SHOPQL_APQ_TTL", 7 * 86400, low=60, high=365 * 86400),
            rate_limit=_int(env, "SHOPQL_RATE_LIMIT", 30_000, low=0, high=1_000_000_000),
            rate_limit_burst=_int(
                env, "SHOPQL_RATE_LIMIT_BURST", 10_000, low=1, high=1_000_000_000
            ),
            max_body_bytes=_int(
                env, "SHOPQL_MAX_BODY_BYTES", 102_400, low=MIN_BODY_BYTES, high=MAX_BODY_BYTES
            ),
            request_timeout=_seconds(
                env, "SHOPQL_REQUEST_TIMEOUT", 30.0, low=0.001, high=MAX_REQUEST_TIMEOUT
            ),
            introspection=None
            if env.get("SHOPQL_INTROSPECTION") is None
            else _flag(env, "SHOPQL_INTROSPECTION", False),
        )
