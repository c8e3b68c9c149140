"""SMTP over STARTTLS and implicit TLS with AUTH, against aiosmtpd with a self-signed
certificate made here (so `verify=false`)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relance_sender.adapters.smtp import SmtpConfig, SmtpTransport
from relance_sender.domain.outcome import Accepted, Deferred
from relance_sender.email_message import BuiltEmail

from .conftest import free_port


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


class Mailbox:
    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, bool]] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        secured = server.transport.get_extra_info("ssl_object") is not None
        self.received.append((envelope.mail_from, envelope.content, secured))
        return "250 2.0.0 Ok: queued as TLS1"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append(data.login)
        ok = data.login == b"relance" and data.password == b"s3cret p@ss"
        return AuthResult(success=ok, handled=False)


def _email() -> BuiltEmail:
    data = (
        b"From: news@shop.example\r\nTo: ok@example.org\r\nSubject: tls\r\n"
        b"Message-ID: <m-tls@shop.example>\r\n\r\nhello\r\n"
    )
    return BuiltEmail("m-tls", "<m-tls@shop.example>", "news@shop.example", "ok@example.org",
                      "tls", data)  # fmt: skip


@pytest.fixture
def starttls_server(tls_context: ssl.SSLContext) -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls_context,
        require_starttls=True,
        authenticator=box.authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


async def test_starttls_and_auth(starttls_server: tuple[Mailbox, int]) -> None:
    box, port = starttls_server
    url = f"smtp://relance:s3cret%20p%40ss@127.0.0.1:{port}?starttls=true&verify=false"
    transport = SmtpTransport(SmtpConfig.from_url(url))
    try:
        first = await transport.send(_email())
        second = await transport.send(_email())  # over the pooled, already-secured connection
    finally:
        await transport.close()
    assert isinstance(first, Accepted) and first.provider_message_id == "TLS1"
    assert isinstance(second, Accepted)
    assert [tls for _, _, tls in box.received] == [True, True]
    assert box.logins == [b"relance"]


async def test_wrong_password_is_not_a_send(starttls_server: tuple[Mailbox, int]) -> None:
    box, port = starttls_server
    url = f"smtp://relance:wrong@127.0.0.1:{port}?starttls=true&verify=false"
    transport = SmtpTransport(SmtpConfig.from_url(url))
    try:
        outcome = await transport.send(_email())
    finally:
        await transport.close()
    assert not isinstance(outcome, Accepted)
    assert box.received == []


async def test_certificate_checked_by_default(starttls_server: tuple[Mailbox, int]) -> None:
    box, port = starttls_server
    url = f"smtp://relance:s3cret%20p%40ss@127.0.0.1:{port}?starttls=true"
    transport = SmtpTransport(SmtpConfig.from_url(url))
    try:
        outcome = await transport.send(_email())
    finally:
        await transport.close()
    assert isinstance(outcome, Deferred)  # a self-signed certificate is refused
    assert box.received == []


async def test_implicit_tls(tls_context: ssl.SSLContext) -> None:
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        ssl_context=tls_context,
        authenticator=box.authenticate,
        auth_required=True,
        auth_require_tls=False,  # aiosmtpd only counts STARTTLS; this socket is TLS already
    )
    controller.start()
    try:
        url = f"smtps://relance:s3cret%20p%40ss@127.0.0.1:{port}?verify=false"
        transport = SmtpTransport(SmtpConfig.from_url(url))
        try:
            outcome = await transport.send(_email())
        finally:
            await transport.close()
    finally:
        controller.stop()
    assert isinstance(outcome, Accepted)
    assert [tls for _, _, tls in box.received] == [True]
