"""SMTP sessions against aiosmtpd: pipelined when the server offers PIPELINING (as Postfix
does), one command at a time otherwise, SMTPUTF8, and under uvloop (the service's loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop
from aiosmtpd.controller import Controller

from relance_sender.adapters.smtp import SmtpConfig, SmtpTransport
from relance_sender.domain.outcome import Accepted, Deferred, Rejected
from relance_sender.email_message import BuiltEmail

from .conftest import ScriptedSmtpHandler, free_port


@dataclass
class PipeliningHandler(ScriptedSmtpHandler):
    """The scripted server, saying PIPELINING (aiosmtpd reads commands in order anyway)."""

    ehlo_extra: tuple[str, ...] = ("PIPELINING",)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], *(f"250-{word}" for word in self.ehlo_extra), responses[-1]]


@pytest.fixture
def pipelining_server() -> Iterator[tuple[PipeliningHandler, int]]:
    handler = PipeliningHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def email(to: str, n: int = 1, sender: str = "news@shop.example") -> BuiltEmail:
    data = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: m-{n}\r\nMessage-ID: <m-{n}@shop.example>\r\n\r\n"
        ".starts with a dot\r\nhello\r\n"
    ).encode()
    return BuiltEmail(f"m-{n}", f"<m-{n}@shop.example>", sender, to, f"m-{n}", data)


def transport(port: int, **options: str) -> SmtpTransport:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?{query}"))


async def test_pipelined_sends_and_refusals_keep_the_session_in_step(
    pipelining_server: tuple[PipeliningHandler, int],
) -> None:
    handler, port = pipelining_server
    smtp = transport(port, pool="1")
    outcomes = [
        await smtp.send(email("ok@example.org", 1)),
        await smtp.send(email("nouser@example.org", 2)),  # 550 at RCPT, then 554 to DATA
        await smtp.send(email("later@example.org", 3)),  # 451 to the final dot
        await smtp.send(email("ok@example.org", 4)),
    ]
    assert len(smtp._idle) == 1  # one session carried all four
    await smtp.close()
    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[3], Accepted)
    assert isinstance(outcomes[1], Rejected) and outcomes[1].code == "550 5.1.1"
    assert isinstance(outcomes[2], Deferred) and outcomes[2].code == "451 4.3.0"
    subjects = [content.split(b"\r\n")[2] for _, _, content in handler.received]
    assert subjects == [b"Subject: m-1", b"Subject: m-4"]
    assert all(b"\r\n.starts with a dot" in content for _, _, content in handler.received)


async def test_mail_rcpt_and_data_travel_in_one_packet_when_the_server_pipelines() -> None:
    packets: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-raw\r\n250 PIPELINING\r\n")
        packets.append(await reader.read(65536))
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        data = await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 queued as RAW1\r\n")
        packets.append(data)
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    smtp = transport(port)
    outcome = await smtp.send(email("ok@example.org"))
    await smtp.close()
    server.close()
    assert isinstance(outcome, Accepted) and outcome.provider_message_id == "RAW1"
    assert packets[0] == b"MAIL FROM:<news@shop.example>\r\nRCPT TO:<ok@example.org>\r\nDATA\r\n"


async def test_without_pipelining_commands_wait_for_each_reply(
    smtp_server: tuple[ScriptedSmtpHandler, int],
) -> None:
    handler, port = smtp_server  # plain aiosmtpd: no PIPELINING in its EHLO
    smtp = transport(port, pool="1")
    assert isinstance(await smtp.send(email("nouser@example.org", 1)), Rejected)
    assert isinstance(await smtp.send(email("ok@example.org", 2)), Accepted)
    await smtp.close()
    assert len(handler.received) == 1


async def test_a_non_ascii_address_needs_smtputf8(
    pipelining_server: tuple[PipeliningHandler, int],
) -> None:
    handler, port = pipelining_server
    smtp = transport(port)
    accepted = await smtp.send(email("ok.zoé@example.org"))
    await smtp.close()
    assert isinstance(accepted, Accepted)
    assert handler.received[0][1] == ["ok.zoé@example.org"]

    ascii_only = ScriptedSmtpHandler()
    plain_port = free_port()
    controller = Controller(ascii_only, hostname="127.0.0.1", port=plain_port,
                            enable_SMTPUTF8=False)  # fmt: skip
    controller.start()
    try:
        plain = transport(plain_port)
        refused = await plain.send(email("ok.zoé@example.org"))
        await plain.close()
    finally:
        controller.stop()
    assert isinstance(refused, Rejected) and refused.code == "smtputf8"
    assert ascii_only.received == []  # refused before anything was sent


def test_sessions_work_under_uvloop(pipelining_server: tuple[PipeliningHandler, int]) -> None:
    handler, port = pipelining_server

    async def two_sends() -> list[object]:
        smtp = transport(port, pool="1")
        try:
            return [await smtp.send(email("ok@example.org", n)) for n in (1, 2)]
        finally:
            await smtp.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        outcomes = runner.run(two_sends())
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert len(handler.received) == 2


async def test_a_session_the_server_closed_while_idle_is_replaced(
    pipelining_server: tuple[PipeliningHandler, int],
) -> None:
    handler, port = pipelining_server
    smtp = transport(port, pool="1")
    assert isinstance(await smtp.send(email("ok@example.org", 1)), Accepted)
    (session,) = smtp._idle
    session.reader.data_received(b"421 4.4.2 idle too long\r\n")  # what a server says on timeout
    assert isinstance(await smtp.send(email("ok@example.org", 2)), Accepted)
    assert smtp._idle and smtp._idle[0] is not session
    await smtp.close()
    assert len(handler.received) == 2
