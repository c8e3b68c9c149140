from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes, policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relance_runtime.tokens import TokenSigner
from relance_sender.adapters.smtp import SmtpConfig, SmtpTransport
from relance_sender.domain.outcome import Accepted, Ambiguous, Deferred, Rejected
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import BuiltEmail, DkimKey, EmailBuilder, SenderIdentity
from relance_sender.rendering.renderer import Renderer, ShopProfile

from .conftest import ScriptedSmtpHandler

NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def request(message_id: str = "m-1") -> SendRequest:
    return SendRequest.from_json(
        {
            "message_id": message_id,
            "shop_id": "shop-1",
            "contact_key": "u-1",
            "plan": "birthday",
            "step": "wishes",
            "variant": None,
            "channel": "email",
            "purpose": "marketing",
            "locale": "fr",
            "context": {
                "contact": {"email": "ok@example.org", "first_name": "Léa"},
                "coupon": {"code": "LEA10", "discount": "10 %", "expires_at": "2025-03-31"},
            },
        }
    )


@pytest.fixture(scope="module")
def dkim_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture
def builder(dkim_pair: tuple[bytes, bytes]) -> EmailBuilder:
    return EmailBuilder(
        renderer=Renderer(
            shop=ShopProfile(
                name="Maison Dupont",
                url="https://shop.example",
                support_url="https://shop.example/aide",
                review_url="https://shop.example/avis",
            )
        ),
        signer=TokenSigner({"k1": b"0123456789abcdef0123"}, "k1"),
        public_url="https://relance.example",
        identity=SenderIdentity(
            marketing_from="Maison Dupont <news@shop.example>",
            transactional_from="Maison Dupont <commandes@shop.example>",
            message_id_domain="mail.shop.example",
        ),
        dkim_key=DkimKey("s1", "shop.example", dkim_pair[0]),
    )


def transport(port: int, **options: str) -> SmtpTransport:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?{query}"))


def email_to(builder: EmailBuilder, to: str, message_id: str = "m-1") -> BuiltEmail:
    return builder.build(request(message_id), to=to, now=NOW)


async def test_250_delivers_a_dkim_signed_message_with_both_parts(
    smtp_server: tuple[ScriptedSmtpHandler, int],
    builder: EmailBuilder,
    dkim_pair: tuple[bytes, bytes],
) -> None:
    handler, port = smtp_server
    smtp = transport(port)
    outcome = await smtp.send(email_to(builder, "ok@example.org"))
    await smtp.close()
    assert isinstance(outcome, Accepted) and outcome.provider_message_id
    mail_from, rcpts, content = handler.received[0]
    assert (mail_from, rcpts) == ("news@shop.example", ["ok@example.org"])
    msg = message_from_bytes(content, policy=policy.default)
    assert msg["Message-ID"] == "<m-1@mail.shop.example>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(dkim_pair[1])
    assert dkim.verify(content, dnsfunc=lambda name, timeout=5: record)


async def test_pooled_connection_is_reused(
    smtp_server: tuple[ScriptedSmtpHandler, int], builder: EmailBuilder
) -> None:
    handler, port = smtp_server
    smtp = transport(port, pool="1")
    for n in range(3):
        assert isinstance(await smtp.send(email_to(builder, "ok@example.org", f"m-{n}")), Accepted)
    assert len(smtp._idle) == 1
    await smtp.close()
    assert len(handler.received) == 3


@pytest.mark.parametrize(
    ("to", "kind", "code"),
    [
        ("busy@example.org", Deferred, "421 4.7.28"),
        ("later@example.org", Deferred, "451 4.3.0"),
        ("nouser@example.org", Rejected, "550 5.1.1"),
    ],
)
async def test_refusals_are_classified(
    smtp_server: tuple[ScriptedSmtpHandler, int],
    builder: EmailBuilder,
    to: str,
    kind: type,
    code: str,
) -> None:
    handler, port = smtp_server
    smtp = transport(port)
    outcome = await smtp.send(email_to(builder, to))
    assert isinstance(outcome, kind)
    assert outcome.code == code  # type: ignore[attr-defined]
    if isinstance(outcome, Rejected):
        assert outcome.suppress and outcome.bounce == "hard"
    # The connection stays usable (or is replaced) for the next message.
    assert isinstance(await smtp.send(email_to(builder, "ok@example.org", "m-2")), Accepted)
    await smtp.close()
    assert [r[1] for r in handler.received] == [["ok@example.org"]]


async def test_slow_final_reply_is_waited_for_beyond_the_command_timeout(
    smtp_server: tuple[ScriptedSmtpHandler, int], builder: EmailBuilder
) -> None:
    _, port = smtp_server
    smtp = transport(port, timeout="0.5", data_timeout="10")
    outcome = await smtp.send(email_to(builder, "slow@example.org"))
    await smtp.close()
    assert isinstance(outcome, Accepted)


async def test_final_reply_timeout_is_ambiguous(
    smtp_server: tuple[ScriptedSmtpHandler, int], builder: EmailBuilder
) -> None:
    handler, port = smtp_server
    smtp = transport(port, data_timeout="0.3")
    outcome = await smtp.send(email_to(builder, "slow@example.org"))
    await smtp.close()
    assert isinstance(outcome, Ambiguous)
    assert len(handler.received) == 1  # the server did get it: a resend would duplicate


async def test_connection_reset_after_data_is_ambiguous(
    smtp_server: tuple[ScriptedSmtpHandler, int], builder: EmailBuilder
) -> None:
    handler, port = smtp_server
    smtp = transport(port)
    outcome = await smtp.send(email_to(builder, "reset@example.org"))
    assert isinstance(outcome, Ambiguous)
    assert len(handler.received) == 1
    assert isinstance(await smtp.send(email_to(builder, "ok@example.org", "m-2")), Accepted)
    await smtp.close()


async def test_no_server_is_a_retry_not_a_failure(builder: EmailBuilder) -> None:
    from .conftest import free_port

    smtp = transport(free_port())
    outcome = await smtp.send(email_to(builder, "ok@example.org"))
    assert isinstance(outcome, Deferred) and outcome.code == "connect"


def test_smtp_url_options() -> None:
    config = SmtpConfig.from_url("smtp://us%40er:p%3Ass@mail.example:587?starttls=true&pool=8")
    assert (config.username, config.password, config.port) == ("us@er", "p:ss", 587)
    assert (config.start_tls, config.use_tls, config.pool_size) == (True, False, 8)
    assert config.final_reply_timeout_s == 600.0
    implicit = SmtpConfig.from_url("smtps://mail.example")
    assert (implicit.use_tls, implicit.port) == (True, 465)
