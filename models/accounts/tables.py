"""Accounts tables: users, their permissions, sessions and refresh tokens, password-reset
tokens, addresses. Tokens are stored only as SHA-256 hashes."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import optional_timestamp_column, timestamp_column, utcnow

PERMISSIONS = (
    "MANAGE_PRODUCTS",
    "MANAGE_ORDERS",
    "MANAGE_DISCOUNTS",
    "MANAGE_SHIPPING",
    "MANAGE_STAFF",
)
_PERMISSION_LIST = ", ".join(f"'{p}'" for p in PERMISSIONS)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    # Normalised (lower-case) at the edge, so uniqueness is case-insensitive.
    email: str = Field(sa_column=sa.Column(sa.String(254), nullable=False, unique=True))
    password_hash: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    first_name: str = Field(
        default="", sa_column=sa.Column(sa.String(100), nullable=False, server_default="")
    )
    last_name: str = Field(
        default="", sa_column=sa.Column(sa.String(100), nullable=False, server_default="")
    )
    is_staff: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    is_active: bool = Field(
        default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.true())
    )
    date_joined: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class UserPermission(SQLModel, table=True):
    __tablename__ = "user_permissions"
    __table_args__ = (
        sa.CheckConstraint(f"permission IN ({_PERMISSION_LIST})", name="ck_user_permission"),
    )

    user_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        )
    )
    permission: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))


class AuthSession(SQLModel, table=True):
    """A sign-in: the family of refresh tokens that rotate from one tokenCreate."""

    __tablename__ = "auth_sessions"
    __table_args__ = (sa.Index("ix_auth_sessions_user", "user_id"),)

    id: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    user_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


class RefreshToken(SQLModel, table=True):
    __tablename__ = "refresh_tokens"
    __table_args__ = (sa.Index("ix_refresh_tokens_session", "session_id"),)

    token_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    session_id: str = Field(
        sa_column=sa.Column(
            sa.String(32), sa.ForeignKey("auth_sessions.id", ondelete="CASCADE"), nullable=False
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    used_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


class PasswordResetToken(SQLModel, table=True):
    __tablename__ = "password_reset_tokens"
    __table_args__ = (sa.Index("ix_password_reset_user", "user_id"),)

    token_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    user_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    used_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


class Address(SQLModel, table=True):
    __tablename__ = "addresses"
    __table_args__ = (
        sa.Index("ix_addresses_user", "user_id", "id"),
        # At most one default shipping address per user; deleting it clears the default.
        sa.Index(
            "uq_addresses_default_shipping",
            "user_id",
            unique=True,
            sqlite_where=sa.text("is_default_shipping"),
            postgresql_where=sa.text("is_default_shipping"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE")),
    )
    first_name: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    last_name: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    company_name: str = Field(
        default="", sa_column=sa.Column(sa.String(100), nullable=False, server_default="")
    )
    street_address_1: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    street_address_2: str = Field(
        default="", sa_column=sa.Column(sa.String(200), nullable=False, server_default="")
    )
    city: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    postal_code: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    country_code: str = Field(sa_column=sa.Column(sa.String(2), nullable=False))
    country_area: str = Field(
        default="", sa_column=sa.Column(sa.String(100), nullable=False, server_default="")
    )
    phone: str = Field(
        default="", sa_column=sa.Column(sa.String(32), nullable=False, server_default="")
    )
    is_default_shipping: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class MailMessage(SQLModel, table=True):
    """Outgoing mail: the embedded default's outbox (and a record of what SMTP sent)."""

    __tablename__ = "mail_outbox"

    id: int | None = Field(default=None, primary_key=True)
    recipient: str = Field(sa_column=sa.Column(sa.String(254), nullable=False))
    subject: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    sent_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


users: sa.Table = User.__table__  # type: ignore[attr-defined]
user_permissions: sa.Table = UserPermission.__table__  # type: ignore[attr-defined]
auth_sessions: sa.Table = AuthSession.__table__  # type: ignore[attr-defined]
refresh_tokens: sa.Table = RefreshToken.__table__  # type: ignore[attr-defined]
password_reset_tokens: sa.Table = PasswordResetToken.__table__  # type: ignore[attr-defined]
addresses: sa.Table = Address.__table__  # type: ignore[attr-defined]
mail_outbox: sa.Table = MailMessage.__table__  # type: ignore[attr-defined]
