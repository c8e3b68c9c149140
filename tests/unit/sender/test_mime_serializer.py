"""The builder writes MIME bytes itself (the stdlib's header registry costs milliseconds per
message). Property: for the same inputs, what it writes parses back (stdlib parser) like
what the stdlib would have written, stays 7-bit, and no line exceeds 998 octets.

Headers must read back exactly as given. There the stdlib's own writer is not the oracle:
it splits a French display name inside a word ("l'É té") and leaves text that looks like
an encoded word for readers to decode; both cases are below."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import dkim
from hypothesis import given, settings
from hypothesis import strategies as st

from relance_runtime.tokens import TokenSigner
from relance_sender.email_message import (
    DkimKey,
    EmailBuilder,
    SenderIdentity,
    header,
    quoted_printable,
)
from relance_sender.rendering.renderer import RenderedEmail

from .conftest import dkim_test_key, make_request

NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
PEM = dkim_test_key().pem
RECORD = dkim_test_key().record

FRENCH = [
    "Zoé",
    "Hélène d'Artagnan",
    'François "Le Grand"',
    "Maison Dupont, Fils & Cie",
    "Ça a été l'été — déjà ?",
    "Œuvres à prix réduit : -20 % sur l'Été",
    "Noël 🎄 approche",
    "=?utf-8?q?pas_un_mot_encod=C3=A9?=",
    "Ligne\tavec tabulation",
]
# Printable text, French included; no control characters but the tab.
text_chars = st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t")
words = st.sampled_from(FRENCH) | st.text(text_chars, min_size=1, max_size=30)
phrase = st.lists(words, min_size=1, max_size=40).map(" ".join)
subject = phrase.map(lambda s: " ".join(s.split())).filter(bool)
# Names as operators configure them: up to a few dozen characters.
display_name = st.sampled_from(["", *FRENCH[:6]]) | phrase.map(
    lambda s: " ".join(s.split())[:80].strip()
)
body_line = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=300
) | st.sampled_from([".", ". ", "..", "From x", "a  ", "=", " "])
body = st.lists(body_line, min_size=1, max_size=12).map("\n".join)


class FixedRender:
    """A renderer that returns what the test chose (the builder calls `render_email`)."""

    def __init__(self, rendered: RenderedEmail) -> None:
        self.rendered = rendered

    def render_email(self, *args: Any, **kwargs: Any) -> RenderedEmail:
        return self.rendered


def ours(subject: str, sender: str, reply_to: str | None, text: str, html: str) -> bytes:
    builder = EmailBuilder(
        renderer=FixedRender(RenderedEmail("fr", subject, "", html, text)),  # type: ignore[arg-type]
        signer=TokenSigner({"k1": b"0123456789abcdef0123"}, "k1"),
        public_url="https://relance.example",
        identity=SenderIdentity(
            marketing_from=sender,
            transactional_from=sender,
            message_id_domain="mail.shop.example",
            reply_to=reply_to,
        ),
        dkim_key=DkimKey("s1", "shop.example", PEM),
    )
    return builder.build(make_request("birthday", "wishes"), to="zoe@example.org", now=NOW).data


def stdlib(subject: str, sender: Address, reply_to: Address | None, text: str, html: str) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = "zoe@example.org"
    if reply_to is not None:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def read(data: bytes) -> dict[str, Any]:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and rich is not None

    def content(part: EmailMessage) -> str:
        # The stdlib ends a part with a newline; line ends are CRLF or LF by writer.
        return str(part.get_content()).replace("\r\n", "\n").removesuffix("\n")

    def mailbox(name: str) -> tuple[str, str] | None:
        value = msg[name]
        if value is None:
            return None
        (address,) = value.addresses
        return address.display_name, address.addr_spec

    return {
        "subject": str(msg["Subject"]),
        "from": mailbox("From"),
        "to": mailbox("To"),
        "reply-to": mailbox("Reply-To"),
        "type": msg.get_content_type(),
        "parts": [(p.get_content_type(), p.get_content_charset()) for p in (plain, rich)],
        "text": content(plain),
        "html": content(rich),
        "defects": [d for p in msg.walk() for d in p.defects],
    }


@settings(max_examples=150, deadline=None)
@given(subject, display_name, st.none() | display_name, body, body)
def test_our_bytes_parse_back_like_the_stdlibs(
    subject: str, name: str, reply_name: str | None, text: str, html: str
) -> None:
    sender = Address(name, addr_spec="news@shop.example")
    reply_to = None if reply_name is None else Address(reply_name, addr_spec="aide@shop.example")
    data = ours(subject, str(sender), None if reply_to is None else str(reply_to), text, html)

    got, expected = read(data), read(stdlib(subject, sender, reply_to, text, html))
    headers = ("subject", "from", "reply-to")
    assert {k: v for k, v in got.items() if k not in headers} == {
        k: v for k, v in expected.items() if k not in headers
    }
    assert got["subject"] == subject
    assert got["from"] == (name, "news@shop.example")
    assert got["reply-to"] == (None if reply_name is None else (reply_name, "aide@shop.example"))
    assert got["defects"] == []
    assert data.isascii()
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only: what SMTP carries


@settings(max_examples=20, deadline=None)
@given(subject, display_name, body)
def test_every_message_verifies_with_dkimpy(subject: str, name: str, text: str) -> None:
    sender = str(Address(name, addr_spec="news@shop.example"))
    data = ours(subject, sender, None, text, f"<p>{text}</p>")
    assert dkim.verify(data, dnsfunc=lambda _name, timeout=5: RECORD)


def test_long_subjects_are_folded_in_encoded_words_of_75_characters_at_most() -> None:
    long = "Votre panier vous attend : " + "très " * 150 + "bientôt"
    raw = header("Subject", long)
    lines = raw.split(b"\r\n")[:-1]
    assert len(lines) > 10 and all(len(line) <= 998 for line in lines)
    assert all(len(word) <= 75 for line in lines for word in line.split() if b"=?" in word)
    parsed = message_from_bytes(raw + b"\r\n", policy=policy.default)["Subject"]
    assert str(parsed) == long


def test_a_literal_encoded_word_in_a_subject_is_not_decoded_by_readers() -> None:
    tricky = "Code =?utf-8?q?ETE20?= valable"
    raw = header("Subject", tricky) + b"\r\n"
    assert str(message_from_bytes(raw, policy=policy.default)["Subject"]) == tricky


def test_a_display_name_too_long_for_one_line_is_split_as_rfc_2047_reads_it() -> None:
    name = "Maison Dupont & Fils, créateurs à Lyon depuis 1920 — " * 12
    sender = str(Address(name.strip(), addr_spec="news@shop.example"))
    data = ours("Bonjour", sender, None, "texte", "<p>html</p>")
    head = data.split(b"\r\n\r\n")[0].decode()
    lines = head.split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("From: "))
    folded = [lines[start], *[line for line in lines[start + 1 :] if line.startswith(" ")]]
    assert len(folded) > 1 and all(len(line) <= 998 for line in folded)
    # RFC 2047 6.2: white space between adjacent encoded words is not shown.
    words = " ".join(folded).removeprefix("From: ").rsplit(" <", 1)[0]
    shown = "".join(
        part.decode(charset) if charset else part.decode() for part, charset in decode_header(words)
    )
    assert shown == name.strip()


def test_a_french_display_name_reads_back_whole() -> None:
    name = "Zoé Œuvres à prix réduit : -20 % sur l'Été"
    data = ours("Bonjour", str(Address(name, addr_spec="news@shop.example")), None, "t", "<p>h</p>")
    (address,) = message_from_bytes(data, policy=policy.default)["From"].addresses
    assert address.display_name == name


qp_text = st.lists(
    st.sampled_from(["a", "é", "\u2019", " ", "\t", "=", ".", "\n", "\r\n", "\r", "x" * 80, " \n"]),
    max_size=60,
).map("".join)


@given(qp_text)
def test_line_by_line_quoted_printable_is_the_whole_text_encoding(text: str) -> None:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    whole = binascii.b2a_qp(normalised, quotetabs=False, istext=True).replace(b"\n", b"\r\n")
    assert quoted_printable(text) == whole
    assert binascii.a2b_qp(quoted_printable(text)).replace(b"\r\n", b"\n") == normalised
