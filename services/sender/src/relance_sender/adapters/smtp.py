"""Email over SMTP: a small pool of sessions and careful reply handling.

Until the message data is written, any failure is safe to retry (nothing was delivered).
Once it is written, a broken connection or a timeout is ambiguous (RFC 1047): the server
may have queued it, so the attempt is reported `Ambiguous`, never retried blindly.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from relance_runtime.errors import ConfigError
from relance_sender.adapters.smtp_session import (
    SessionClosed,
    SessionTransport,
    SmtpSession,
    data_payload,
)
from relance_sender.domain.outcome import (
    Accepted,
    Ambiguous,
    Deferred,
    DeliveryOutcome,
    Rejected,
    classify_smtp_reply,
)
from relance_sender.email_message import BuiltEmail

_TRUE = {"1", "true", "yes", "on"}
# As many sessions as RELANCE_SENDER_CONCURRENCY's default sends at once: none waits.
DEFAULT_POOL: Final = 8


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    validate_certs: bool = True
    pool_size: int = DEFAULT_POOL
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
                pool_size=int(query.get("pool", DEFAULT_POOL)),
                command_timeout_s=float(query.get("timeout", "60")),
                final_reply_timeout_s=float(query.get("data_timeout", "600")),
                local_hostname=query.get("helo"),
            )
        except ValueError as exc:
            raise ConfigError(f"bad RELANCE_SMTP_URL option: {exc}") from exc


# Nothing that could end or split a command line, nor the brackets around the address.
_UNSAFE_ADDRESS: Final = re.compile(r"[\x00-\x1f\x7f<>]")


class _BrokenBeforeData(Exception):
    """The session failed before the message was written: nothing was delivered."""


class SmtpTransport:
    """A pool of SMTP sessions. aiosmtplib opens each one (TLS, STARTTLS, EHLO, AUTH);
    the transactions then run on `SmtpSession`, pipelined when the server offers it."""

    name = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._slots = asyncio.Semaphore(config.pool_size)
        self._idle: list[SmtpSession] = []

    async def _connect(self) -> SmtpSession:
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
        try:
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
            transport: object = client.transport
            # uvloop's transports are not asyncio.Transport subclasses, only alike.
            if not isinstance(transport, SessionTransport):
                raise aiosmtplib.SMTPServerDisconnected("no transport after connecting")
        except BaseException:
            client.close()
            raise
        return SmtpSession(
            transport,
            pipelining=client.supports_extension("pipelining"),
            smtputf8=client.supports_extension("smtputf8"),
        )

    async def send(self, email: BuiltEmail) -> DeliveryOutcome:
        async with self._slots:
            for _ in range(2):
                reused = False
                while self._idle and not reused:
                    session = self._idle.pop()
                    reused = session.usable
                    if not reused:
                        session.close()
                if not reused:
                    try:
                        session = await self._connect()
                    except aiosmtplib.SMTPResponseException as exc:
                        return classify_smtp_reply(exc.code, exc.message)
                    except (aiosmtplib.SMTPException, OSError) as exc:
                        return Deferred(reason=f"cannot connect: {exc}", code="connect")
                try:
                    outcome = await self._transaction(session, email)
                except BaseException as exc:
                    session.close()
                    if not isinstance(exc, _BrokenBeforeData):
                        raise
                    # An idle session the server had closed: nothing sent, retry fresh.
                    if reused:
                        continue
                    return Deferred(reason="connection lost before DATA", code="disconnected")
                if session.usable:
                    self._idle.append(session)
                else:
                    session.close()
                return outcome
            return Deferred(reason="connection lost before DATA", code="disconnected")

    async def _transaction(self, session: SmtpSession, email: BuiltEmail) -> DeliveryOutcome:
        """One MAIL/RCPT/DATA exchange; raises _BrokenBeforeData when nothing was written."""
        if _UNSAFE_ADDRESS.search(email.envelope_from) or _UNSAFE_ADDRESS.search(email.to):
            return Rejected(reason="address with a control character or a bracket", code="address")
        utf8 = not (email.envelope_from.isascii() and email.to.isascii())
        if utf8 and not session.smtputf8:
            return Rejected(
                reason="a non-ASCII address needs SMTPUTF8, which the server does not offer",
                code="smtputf8",
            )
        try:
            async with asyncio.timeout(self._config.command_timeout_s):
                refused = await session.open_data(
                    email.envelope_from.encode(), email.to.encode(), utf8=utf8
                )
        except OSError as exc:  # SessionClosed, a timeout, a reset
            raise _BrokenBeforeData from exc
        if refused is not None:
            await self._reset(session, refused.reply.code)
            return classify_smtp_reply(refused.reply.code, refused.reply.text)
        try:
            session.write_data(data_payload(email.data))
        except SessionClosed as exc:
            raise _BrokenBeforeData from exc
        try:
            async with asyncio.timeout(self._config.final_reply_timeout_s):
                reply = await session.final_reply()
        except OSError as exc:
            # The data was written: the server may have queued it (RFC 1047).
            session.close()
            return Ambiguous(reason=f"connection broken during DATA: {type(exc).__name__}")
        if reply.code == 421:
            session.close()
        if reply.code != 250:
            return classify_smtp_reply(reply.code, reply.text)
        return Accepted(
            provider_message_id=_queue_id(reply.text), detail=f"{reply.code} {reply.text}"
        )

    async def _reset(self, session: SmtpSession, code: int) -> None:
        """Ready the session for the next message after a refusal, or drop it."""
        if code != 421:
            try:
                async with asyncio.timeout(self._config.command_timeout_s):
                    if await session.reset():
                        return
            except OSError:
                pass
        session.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            try:
                async with asyncio.timeout(self._config.command_timeout_s):
                    await session.quit()
            except OSError:
                session.close()


def _queue_id(reply: str) -> str | None:
    """Most MTAs put their queue id in the reply (`2.0.0 Ok: queued as 4Bc1`)."""
    words = reply.replace(":", " ").split()
    if "as" in words and words.index("as") + 1 < len(words):
        return words[words.index("as") + 1][:128]
    return None
