from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage

import dkim
import pytest

from relance_events.payloads import LEAVE_REASONS
from relance_runtime.tokens import InvalidToken, TokenSigner
from relance_sender.email_message import (
    DkimKey,
    EmailBuilder,
    PlainLinks,
    SenderIdentity,
    TrackingLinks,
)
from relance_sender.errors import RenderError
from relance_sender.rendering.renderer import Renderer

from .conftest import NOW, PUBLIC_URL, dkim_test_key, make_request


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_marketing_email_headers_and_both_parts(builder: EmailBuilder, signer: TokenSigner) -> None:
    built = builder.build(make_request("birthday", "wishes"), to="zoe@example.org", now=NOW)
    msg = parse(built.data)
    assert msg["Message-ID"] == "<m-1@mail.shop.example>"
    assert msg["From"] == "Maison Dupont <news@shop.example>"
    assert msg["To"] == "zoe@example.org"
    assert msg["Feedback-ID"] == "birthday:wishes:shop-1:relance"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(rf"<{PUBLIC_URL}/u/(\S+)>", str(msg["List-Unsubscribe"]))
    assert match is not None
    claims = signer.verify("unsub", match.group(1))
    assert claims == {"s": "shop-1", "c": "u-1", "m": "m-1", "ch": "email", "pu": "marketing"}
    text, html = parts(msg)
    assert f"{PUBLIC_URL}/u/{match.group(1)}" in text and f"{PUBLIC_URL}/u/" in html
    pixel = re.search(rf'src="{PUBLIC_URL}/t/o/([^"]+)\.gif"', html)
    assert pixel is not None
    assert signer.verify("open", pixel.group(1)) == {
        "s": "shop-1", "c": "u-1", "m": "m-1", "pl": "birthday", "st": "wishes"
    }  # fmt: skip


def test_links_are_rewritten_to_signed_click_tokens(
    builder: EmailBuilder, signer: TokenSigner
) -> None:
    built = builder.build(make_request("cross_sell", "reminder"), to="zoe@example.org", now=NOW)
    _, html = parts(parse(built.data))
    targets = set()
    for token in re.findall(rf'href="{PUBLIC_URL}/t/c/([^"]+)"', html):
        claims = signer.verify("click", token)
        assert (claims["m"], claims["pl"], claims["st"]) == ("m-1", "cross_sell", "reminder")
        targets.add(claims["u"])
    assert {"https://shop.example/p/echarpe", "https://shop.example"} <= targets
    assert 'href="https://shop.example' not in html


def test_survey_links_carry_order_and_answer(builder: EmailBuilder, signer: TokenSigner) -> None:
    built = builder.build(
        make_request("satisfaction_survey", "survey"), to="zoe@example.org", now=NOW
    )
    _, html = parts(parse(built.data))
    tokens = re.findall(rf'href="{PUBLIC_URL}/s/([^"]+)"', html)
    answers = [signer.verify("survey", t) for t in tokens]
    assert [a["a"] for a in answers] == ["very_satisfied", "satisfied", "not_satisfied"]
    assert {a["o"] for a in answers} == {"o-42"}


def test_transactional_mail_has_its_own_sender_and_no_unsubscribe_or_tracking(
    builder: EmailBuilder,
) -> None:
    request = make_request("satisfaction_survey", "reassurance", purpose="transactional")
    msg = parse(builder.build(request, to="zoe@example.org", now=NOW).data)
    assert msg["From"] == "Maison Dupont <commandes@shop.example>"
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
    text, html = parts(msg)
    assert "/t/o/" not in html and "/t/c/" not in html and "/u/" not in text
    assert 'href="https://shop.example/aide"' in html


def test_dkim_signature_verifies_and_covers_both_rfc8058_headers(
    renderer: Renderer,
    signer: TokenSigner,
    identity: SenderIdentity,
) -> None:
    key = dkim_test_key()
    builder = EmailBuilder(
        renderer=renderer,
        signer=signer,
        public_url=PUBLIC_URL,
        identity=identity,
        dkim_key=DkimKey("s1", "shop.example", key.pem),
    )
    data = builder.build(make_request("birthday", "wishes"), to="zoe@example.org", now=NOW).data

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.shop.example."
        return key.record

    assert dkim.verify(data, dnsfunc=dns)
    signature = parse(data)["DKIM-Signature"]
    signed = re.search(r"h=([^;]+)", str(signature).replace(" ", "").replace("\n", ""))
    assert signed is not None
    headers = signed.group(1).lower().split(":")
    assert "list-unsubscribe" in headers and "list-unsubscribe-post" in headers
    tampered = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                            b"List-Unsubscribe-Post: List-Unsubscribe=One-Clack")  # fmt: skip
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_leave_reason_links_carry_the_message_plan_step_and_reason(
    builder: EmailBuilder, signer: TokenSigner
) -> None:
    built = builder.build(make_request("anti_churn", "reminder_1"), to="zoe@example.org", now=NOW)
    text, html = parts(parse(built.data))
    tokens = re.findall(rf'href="{PUBLIC_URL}/r/([^"]+)"', html)
    claims = [signer.verify("reason", t) for t in tokens]
    assert [c.pop("r") for c in claims] == list(LEAVE_REASONS)
    assert all(
        c == {"s": "shop-1", "c": "u-1", "m": "m-1", "pl": "anti_churn", "st": "reminder_1"}
        for c in claims
    )
    assert all(f"{PUBLIC_URL}/r/{t}" in text for t in tokens)
    with pytest.raises(InvalidToken):  # a reason token is not a survey or click token
        signer.verify("survey", tokens[0])


def test_an_unknown_leave_reason_is_a_render_error(signer: TokenSigner) -> None:
    links = TrackingLinks(signer, PUBLIC_URL, make_request("anti_churn", "reminder_1"))
    with pytest.raises(RenderError, match="unknown leave reason"):
        links.reason("bored")
    assert links.reason("other").startswith(f"{PUBLIC_URL}/r/")


def test_transactional_links_still_sign_leave_reasons(signer: TokenSigner) -> None:
    request = make_request("anti_churn", "reminder_1", purpose="transactional")
    plain = PlainLinks(TrackingLinks(signer, PUBLIC_URL, request))
    assert plain.click("https://shop.example/x") == "https://shop.example/x"
    token = plain.reason("too_expensive").removeprefix(f"{PUBLIC_URL}/r/")
    assert signer.verify("reason", token)["r"] == "too_expensive"
