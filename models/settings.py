"""Configuration, read once from the environment into one object passed to create_app()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./shopql.db"
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


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    debug: bool = False
    cors_origins: tuple[str, ...] = ()
    currency: str = "USD"
    db_pool_size: int = 10
    graphiql: bool | None = None  # None: on in debug, off otherwise

    def __post_init__(self) -> None:
        if "*" in self.cors_origins:
            raise SettingsError(
                "SHOPQL_CORS_ORIGINS may not be '*': the API sends credentials, so list "
                "the allowed origins explicitly"
            )
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise SettingsError(f"SHOPQL_CURRENCY must be an ISO 4217 code, got {self.currency!r}")
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise SettingsError(
                "DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )

    @property
    def graphiql_enabled(self) -> bool:
        return self.debug if self.graphiql is None else self.graphiql

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        origins = tuple(
            o.strip() for o in env.get("SHOPQL_CORS_ORIGINS", "").split(",") if o.strip()
        )
        graphiql_raw = env.get("SHOPQL_GRAPHIQL")
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            debug=_flag(env, "SHOPQL_DEBUG", False),
            cors_origins=origins,
            currency=env.get("SHOPQL_CURRENCY", "USD").strip().upper() or "USD",
            db_pool_size=_int(env, "SHOPQL_DB_POOL_SIZE", 10, low=1, high=200),
            graphiql=None if graphiql_raw is None else _flag(env, "SHOPQL_GRAPHIQL", False),
        )
