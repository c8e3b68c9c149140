"""Email over SMTP with aiosmtplib: a small connection pool and careful reply handling.

Until the message data is written, any failure is safe to retry (nothing was delivered).
Once it is written, a broken connection or a timeout is ambiguous (RFC 1047): the server
may have queued it, so the attempt is reported `Ambiguous`, never retried blindly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from relance_runtime.errors import ConfigError
from relance_sender.domain.outcome import (
    Accepted,
    Ambiguous,
    Deferred,
    DeliveryOutcome,
    classify_smtp_reply,
)
from relance_sender.email_message import BuiltEmail

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    validate_certs: bool = True
    pool_size: int = 4
    command_timeout_s: float = 60.0
    # RFC 5321 4.5.3.2.6: wait up to 10 minutes for the reply to the final dot.
    final_reply_timeout_s: float = 600.0
    local_hostname: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """`smtp://user:pass@host:587?starttls=true`, `smtps://host:465` for implicit TLS.

        Query options: starttls, verify, pool, timeout, data_timeout, helo.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("RELANCE_SMTP_URL looks like smtp://user:pass@host:587?starttls=true")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        use_tls = parts.scheme == "smtps"
        start_tls: bool | None = None
        if "starttls" in query:
            start_tls = query["starttls"].lower() in _TRUE
        try:
            return cls(
                host=parts.hostname,
                port=parts.port or (465 if use_tls else 587 if start_tls else 25),
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                use_tls=use_tls,
                start_tls=False if use_tls else start_tls,
                validate_certs=query.get("verify", "true").lower() in _TRUE,
                pool_size=int(query.get("pool", "4")),
                command_timeout_s=float(query.get("timeout", "60")),
                final_reply_timeout_s=float(query.get("data_timeout", "600")),
                local_hostname=query.get("helo"),
            )
        except ValueError as exc:
            raise ConfigError(f"bad RELANCE_SMTP_URL option: {exc}") from exc


_BEFORE_DATA_BROKEN = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)


class SmtpTransport:
    name = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._slots = asyncio.Semaphore(config.pool_size)
        self._idle: list[aiosmtplib.SMTP] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self._config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            validate_certs=c.validate_certs,
            timeout=c.command_timeout_s,
            local_hostname=c.local_hostname,
        )
        await client.connect()
        return client

    def _discard(self, client: aiosmtplib.SMTP) -> None:
        client.close()

    async def send(self, email: BuiltEmail) -> DeliveryOutcome:
        async with self._slots:
            for _ in range(2):
                reused = bool(self._idle)
                if reused:
                    client = self._idle.pop()
                else:
                    try:
                        client = await self._connect()
                    except aiosmtplib.SMTPResponseException as exc:
                        return classify_smtp_reply(exc.code, exc.message)
                    except (aiosmtplib.SMTPException, OSError) as exc:
                        return Deferred(reason=f"cannot connect: {exc}", code="connect")
                outcome = await self._transaction(client, email)
                if outcome is None:
                    # An idle connection the server had closed: nothing sent, retry fresh.
                    self._discard(client)
                    if reused:
                        continue
                    return Deferred(reason="connection lost before DATA", code="disconnected")
                if client.is_connected:
                    self._idle.append(client)
                return outcome
            return Deferred(reason="connection lost before DATA", code="disconnected")

    async def _transaction(
        self, client: aiosmtplib.SMTP, email: BuiltEmail
    ) -> DeliveryOutcome | None:
        """One MAIL/RCPT/DATA exchange; None when the connection broke before DATA."""
        try:
            await client.mail(email.envelope_from)
            await client.rcpt(email.to)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client, exc.code)
            return classify_smtp_reply(exc.code, exc.message)
        except _BEFORE_DATA_BROKEN:
            return None
        try:
            response = await client.data(email.data, timeout=self._config.final_reply_timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client, exc.code)
            return classify_smtp_reply(exc.code, exc.message)
        except _BEFORE_DATA_BROKEN as exc:
            self._discard(client)
            return Ambiguous(reason=f"connection broken during DATA: {type(exc).__name__}")
        return Accepted(
            provider_message_id=_queue_id(response.message),
            detail=f"{response.code} {response.message}",
        )

    async def _reset(self, client: aiosmtplib.SMTP, code: int) -> None:
        if code == 421 or not client.is_connected:
            self._discard(client)
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            self._discard(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def _queue_id(reply: str) -> str | None:
    """Most MTAs put their queue id in the reply (`2.0.0 Ok: queued as 4Bc1`)."""
    words = reply.replace(":", " ").split()
    if "as" in words and words.index("as") + 1 < len(words):
        return words[words.index("as") + 1][:128]
    return None
