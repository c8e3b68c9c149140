"""One SMTP session's mail transactions, pipelined when the server offers it (RFC 2920).

aiosmtplib opens the session (connection, TLS, EHLO, AUTH); its reply reader then hands
the transport over to `ReplyReader`, which keeps every reply however the packets split
them: aiosmtplib's reader expects one reply per command sent, so it cannot pipeline.
Pipelining MAIL, RCPT and DATA makes a send two writes instead of four, and on loopback
or a virtual machine each write is a wake-up of the server: the largest cost of a send
after the RSA signature.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

# A whole reply (with its continuation lines) larger than this is not SMTP.
MAX_REPLY_BYTES: Final = 64 * 1024

_LINE_ENDS: Final = re.compile(rb"\r\n|\n|\r(?!\n)")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str


class SessionClosed(ConnectionError):
    """The server closed the connection, or spoke something that is not SMTP."""


def data_payload(message: bytes) -> bytes:
    """What follows DATA's 354: CRLF line ends, dot-stuffed (RFC 5321 4.5.2), ending with
    CRLF.CRLF. The builder already writes CRLF, so the regex passes usually run not at all."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_ENDS.sub(b"\r\n", message)
    # Every line now ends with CRLF, so a line starts after one (or at the start).
    message = message.replace(b"\r\n.", b"\r\n..")
    if message.startswith(b"."):
        message = b"." + message
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def take_reply(buffer: bytearray) -> Reply | None:
    """Remove and return the first complete reply in `buffer` (RFC 5321 4.2: `ddd-text`
    lines continue, `ddd text` ends); None while it is incomplete."""
    offset = 0
    lines: list[str] = []
    while True:
        end = buffer.find(b"\n", offset)
        if end == -1:
            return None
        line = bytes(buffer[offset:end]).rstrip(b"\r")
        offset = end + 1
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise SessionClosed(f"not an SMTP reply: {line[:80]!r}")
        lines.append(line[4:].decode("utf-8", "replace").strip())
        if line[3:4] != b"-":
            del buffer[:offset]
            return Reply(int(line[:3]), "\n".join(lines))


class ReplyReader(asyncio.Protocol):
    """The session's protocol once aiosmtplib has opened it: queues replies in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: SessionClosed | None = None

    @property
    def pending(self) -> int:
        """Replies nobody asked for yet (an idle server's `421 timeout`, say)."""
        return len(self._replies)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := take_reply(self._buffer)) is not None:
                self._replies.append(reply)
        except SessionClosed as exc:
            self._close(exc)
            return
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._close(SessionClosed("reply too long"))
            return
        self._wake()

    def eof_received(self) -> bool:
        self._close(SessionClosed("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        closed = SessionClosed(f"connection lost: {exc}" if exc else "connection closed")
        self._close(closed)

    def _close(self, exc: SessionClosed) -> None:
        if self._closed is None:
            self._closed = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self) -> Reply:
        while not self._replies:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._replies.popleft()


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the transaction before the message data was written."""

    reply: Reply


@runtime_checkable
class SessionTransport(Protocol):
    """What a session needs of its transport (asyncio's and uvloop's both have it)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...


class SmtpSession:
    """Transactions over one open session; `pipelining` and `smtputf8` are what the
    server's EHLO offered."""

    def __init__(self, transport: SessionTransport, *, pipelining: bool, smtputf8: bool) -> None:
        self.reader = ReplyReader()
        transport.set_protocol(self.reader)
        self._transport = transport
        self.pipelining = pipelining
        self.smtputf8 = smtputf8

    @property
    def usable(self) -> bool:
        """Open, and with no reply waiting that no command asked for."""
        return not (self.reader.closed or self.reader.pending or self._transport.is_closing())

    def _write(self, data: bytes) -> None:
        if self.reader.closed or self._transport.is_closing():
            raise SessionClosed("connection closed")
        self._transport.write(data)

    async def _command(self, line: bytes) -> Reply:
        self._write(line)
        return await self.reader.reply()

    async def open_data(self, mail_from: bytes, rcpt_to: bytes, *, utf8: bool) -> Refused | None:
        """MAIL, RCPT and DATA; None once the server waits for the data (354). After a
        refusal, `reset` before the next transaction."""
        mail = b"MAIL FROM:<" + mail_from + (b"> SMTPUTF8\r\n" if utf8 else b">\r\n")
        rcpt = b"RCPT TO:<" + rcpt_to + b">\r\n"
        expected = ((250,), (250, 251), (354,))
        if self.pipelining:
            self._write(mail + rcpt + b"DATA\r\n")
            replies = [await self.reader.reply() for _ in expected]
        else:
            replies = []
            for line in (mail, rcpt, b"DATA\r\n"):
                replies.append(await self._command(line))
                if replies[-1].code not in expected[len(replies) - 1]:
                    break
        # Lockstep stops at the first refusal, so `replies` may be shorter.
        refusal = next(
            (r for r, ok in zip(replies, expected, strict=False) if r.code not in ok), None
        )
        if refusal is None:
            return None
        if replies[-1].code == 354:
            # RFC 2920 3.1: DATA accepted although a command before it failed; an empty
            # message ends the data phase, and the server refuses it for want of recipients.
            await self._command(b".\r\n")
        return Refused(refusal)

    async def reset(self) -> bool:
        """RSET after a refused transaction; False when the session is no longer usable."""
        if not self.usable:
            return False
        return (await self._command(b"RSET\r\n")).code == 250

    def write_data(self, payload: bytes) -> None:
        """The dot-stuffed message ending in CRLF.CRLF; SessionClosed if the connection is
        already gone (then nothing of it was written)."""
        self._write(payload)

    async def final_reply(self) -> Reply:
        return await self.reader.reply()

    async def quit(self) -> None:
        try:
            await self._command(b"QUIT\r\n")
        finally:
            self.close()

    def close(self) -> None:
        self._transport.close()
