"""The SMTP session's reply reader and data framing, without a network."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from relance_sender.adapters.smtp_session import (
    Reply,
    SessionClosed,
    SmtpSession,
    data_payload,
    take_reply,
)

message = st.lists(
    st.sampled_from([b"a", b".", b"..", b"\r\n", b"\n", b"\r", b" ", b"=", b"\xc3\xa9", b"x.y"]),
    max_size=40,
).map(b"".join)


@given(message)
def test_data_framing_is_what_aiosmtplib_would_send(raw: bytes) -> None:
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n"
    assert data_payload(raw) == expected


def test_replies_are_taken_whole_however_packets_split_them() -> None:
    buffer = bytearray(b"250-mail.example\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n250 2.1.0 Ok\r")
    assert take_reply(buffer) == Reply(250, "mail.example\nPIPELINING\nSMTPUTF8")
    assert take_reply(buffer) is None  # the second reply has not fully arrived
    buffer += b"\n354 End data with <CR><LF>.<CR><LF>\r\n"
    assert take_reply(buffer) == Reply(250, "2.1.0 Ok")
    assert take_reply(buffer) == Reply(354, "End data with <CR><LF>.<CR><LF>")
    assert take_reply(buffer) is None and buffer == bytearray()


def test_a_reply_that_is_not_smtp_closes_the_session() -> None:
    with pytest.raises(SessionClosed):
        take_reply(bytearray(b"HTTP/1.1 400 Bad Request\r\n"))


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.protocol: Any = None
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


async def test_pipelined_commands_are_one_write_and_every_reply_is_read() -> None:
    transport = FakeTransport()
    session = SmtpSession(transport, pipelining=True, smtputf8=False)
    opening = asyncio.create_task(session.open_data(b"news@shop.example", b"zoe@example.org",
                                                    utf8=False))  # fmt: skip
    await asyncio.sleep(0)
    assert transport.written == [
        b"MAIL FROM:<news@shop.example>\r\nRCPT TO:<zoe@example.org>\r\nDATA\r\n"
    ]
    transport.protocol.data_received(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n")
    assert await opening is None
    session.write_data(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert transport.written[-1] == b"Subject: x\r\n\r\nhi\r\n.\r\n"
    sending = asyncio.create_task(session.final_reply())
    await asyncio.sleep(0)
    transport.protocol.data_received(b"250 2.0.0 Ok: queued as Q1\r\n")
    assert await sending == Reply(250, "2.0.0 Ok: queued as Q1")
    assert session.usable


async def test_a_refused_recipient_reads_every_pipelined_reply_before_resetting() -> None:
    transport = FakeTransport()
    session = SmtpSession(transport, pipelining=True, smtputf8=False)
    opening = asyncio.create_task(session.open_data(b"a@b.example", b"nouser@example.org",
                                                    utf8=False))  # fmt: skip
    await asyncio.sleep(0)
    transport.protocol.data_received(b"250 Ok\r\n550 5.1.1 no such user\r\n")
    await asyncio.sleep(0)
    transport.protocol.data_received(b"554 5.5.1 Error: no valid recipients\r\n")
    refused = await opening
    assert refused is not None and refused.reply == Reply(550, "5.1.1 no such user")
    assert session.usable  # nothing left unread: the next transaction starts clean


async def test_data_accepted_after_a_refused_recipient_gets_an_empty_message() -> None:
    transport = FakeTransport()
    session = SmtpSession(transport, pipelining=True, smtputf8=False)
    opening = asyncio.create_task(session.open_data(b"a@b.example", b"x@example.org", utf8=False))
    await asyncio.sleep(0)
    transport.protocol.data_received(b"250 Ok\r\n550 5.1.1 no\r\n354 go\r\n")
    await asyncio.sleep(0)
    assert transport.written[-1] == b".\r\n"  # RFC 2920 3.1: end the data phase at once
    transport.protocol.data_received(b"554 no valid recipients\r\n")
    refused = await opening
    assert refused is not None and refused.reply.code == 550


async def test_without_pipelining_commands_go_one_by_one_and_stop_at_a_refusal() -> None:
    transport = FakeTransport()
    session = SmtpSession(transport, pipelining=False, smtputf8=True)
    opening = asyncio.create_task(session.open_data(b"a@b.example", b"x@example.org", utf8=True))
    await asyncio.sleep(0)
    assert transport.written == [b"MAIL FROM:<a@b.example> SMTPUTF8\r\n"]
    transport.protocol.data_received(b"451 4.3.0 later\r\n")
    refused = await opening
    assert refused is not None and refused.reply.code == 451
    assert len(transport.written) == 1


async def test_a_closed_connection_fails_the_waiting_command() -> None:
    transport = FakeTransport()
    session = SmtpSession(transport, pipelining=True, smtputf8=False)
    opening = asyncio.create_task(session.open_data(b"a@b.example", b"x@example.org", utf8=False))
    await asyncio.sleep(0)
    transport.protocol.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(SessionClosed):
        await opening
    assert not session.usable


def test_data_for_a_session_already_closed_is_not_written() -> None:
    transport = FakeTransport()
    session = SmtpSession(transport, pipelining=True, smtputf8=False)
    transport.protocol.connection_lost(None)
    with pytest.raises(SessionClosed):
        session.write_data(b"hi\r\n.\r\n")
    assert transport.written == []


def test_an_unsolicited_reply_makes_an_idle_session_unusable() -> None:
    session = SmtpSession(FakeTransport(), pipelining=True, smtputf8=False)
    session.reader.data_received(b"421 4.4.2 idle timeout\r\n")
    assert not session.usable
