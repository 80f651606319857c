"""Outgoing mail. Every message is written to the `mail_outbox` table inside the caller's
transaction (so it exists only if the change committed); when SMTP is configured
(`SHOPQL_SMTP_URL`) it is then sent with aiosmtplib and marked sent. Logs name the message
kind and outbox ID, never the recipient or the body (which may hold a token)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from models.accounts.tables import mail_outbox
from models.db import Database, utcnow

logger = logging.getLogger("shopql.mail")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool  # implicit TLS (smtps://); plain smtp:// upgrades with STARTTLS if offered

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SHOPQL_SMTP_URL must look like smtp://user:pass@host:587")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if parts.scheme == "smtps" else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=parts.scheme == "smtps",
        )


class Mailer:
    def __init__(self, db: Database, *, sender: str, smtp: SmtpConfig | None = None) -> None:
        self.db = db
        self.sender = sender
        self.smtp = smtp
        self._pending: set[asyncio.Task[None]] = set()

    async def queue(
        self, conn: AsyncConnection, *, to: str, subject: str, body: str, kind: str
    ) -> int:
        result = await conn.execute(
            mail_outbox.insert()
            .values(recipient=to, subject=subject, body=body, kind=kind, created_at=utcnow())
            .returning(mail_outbox.c.id)
        )
        message_id = int(result.scalar_one())
        logger.info("mail queued: kind=%s outbox_id=%s", kind, message_id)
        return message_id

    def deliver_later(self, message_ids: list[int]) -> None:
        """Send in the background (the request does not wait for the mail server)."""
        if self.smtp is None or not message_ids:
            return
        task = asyncio.ensure_future(self.deliver(message_ids))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for background sends (at shutdown, and in tests)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def deliver(self, message_ids: list[int]) -> None:
        """Send queued messages over SMTP (after the transaction that queued them)."""
        if self.smtp is None or not message_ids:
            return
        import aiosmtplib

        async with self.db.read() as conn:
            rows = (
                await conn.execute(sa.select(mail_outbox).where(mail_outbox.c.id.in_(message_ids)))
            ).all()
        for row in rows:
            message = EmailMessage()
            message["From"] = self.sender
            message["To"] = row.recipient
            message["Subject"] = row.subject
            message.set_content(row.body)
            try:
                await aiosmtplib.send(
                    message,
                    hostname=self.smtp.host,
                    port=self.smtp.port,
                    username=self.smtp.username,
                    password=self.smtp.password,
                    use_tls=self.smtp.use_tls,
                    timeout=15,
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                logger.warning(
                    "mail not sent: kind=%s outbox_id=%s (%s)", row.kind, row.id, type(exc).__name__
                )
                continue
            async with self.db.transaction() as conn:
                await conn.execute(
                    mail_outbox.update().where(mail_outbox.c.id == row.id).values(sent_at=utcnow())
                )
            logger.info("mail sent: kind=%s outbox_id=%s", row.kind, row.id)
