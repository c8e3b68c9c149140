"""Our OpenSSL DKIM signer against dkimpy: same canonical forms, and `dkim.verify` accepts
every signature (stubbed DNS); the dkimpy signer signs the same headers."""

from __future__ import annotations

from email import message_from_bytes, policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from relance_sender.dkim_signing import DkimpySigner, DkimSigner, relaxed_body, relaxed_header
from relance_sender.email_message import DKIM_HEADERS, encoded_words, header

from .conftest import dkim_test_key

PEM = dkim_test_key().pem
RECORD = dkim_test_key().record
SIGNER = DkimSigner(selector="s1", domain="shop.example", private_key_pem=PEM, headers=DKIM_HEADERS)


def dns(name: bytes, timeout: int = 5) -> bytes:
    assert name == b"s1._domainkey.shop.example."
    return RECORD


line = st.text(alphabet=" \tabcXYZ=.-é", max_size=40).map(lambda s: s.encode())
body = st.lists(line, max_size=8).map(lambda lines: b"\r\n".join(lines)) | st.sampled_from(
    [b"", b"\r\n", b"\r\n\r\n", b"x", b"x \t\r\n\r\n", b"  a  b \r\n"]
)


@given(body)
def test_relaxed_body_matches_dkimpy(raw: bytes) -> None:
    assert relaxed_body(raw) == Relaxed.canonicalize_body(raw)


@given(st.text(alphabet=" \tabc:é;=", max_size=40))
def test_relaxed_header_matches_dkimpy(value: str) -> None:
    raw = value.encode()
    folded = raw.replace(b";", b";\r\n\t")
    expected = Relaxed.canonicalize_headers([(b"Subject", folded)])[0]
    assert relaxed_header(b"Subject", folded) == expected[0] + b":" + expected[1]


def message(subject: bytes, text: bytes) -> bytes:
    return (
        b"From: Shop <news@shop.example>\r\nTo: zoe@example.org\r\nSubject: "
        + subject
        + b"\r\nList-Unsubscribe: <https://r.example/u/t>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
    )


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abc \t", max_size=30).map(lambda s: s.encode()), body)
def test_every_signature_verifies_with_dkimpy(subject: bytes, text: bytes) -> None:
    signed = SIGNER.sign(message(subject.strip() or b"x", text), timestamp=1_740_000_000)
    assert dkim.verify(signed, dnsfunc=dns)


def test_tampering_breaks_the_signature_and_h_lists_rfc8058_headers() -> None:
    signed = SIGNER.sign(message(b"Hello", b"Body\r\n"), timestamp=1_740_000_000)
    assert dkim.verify(signed, dnsfunc=dns)
    sig = message_from_bytes(signed, policy=policy.default)["DKIM-Signature"]
    h = next(t for t in str(sig).replace(" ", "").split(";") if t.startswith("h="))
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(h[2:].split(":"))
    assert not dkim.verify(signed.replace(b"One-Click", b"One-Clack"), dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Body", b"B0dy"), dnsfunc=dns)


def signed_headers(signed: bytes) -> list[str]:
    sig = message_from_bytes(signed, policy=policy.default)["DKIM-Signature"]
    h = next(t for t in str(sig).replace(" ", "").split(";") if t.startswith("h="))
    return h[2:].split(":")


def test_the_dkimpy_signer_signs_the_same_headers_relaxed() -> None:
    dkimpy = DkimpySigner(
        selector="s1", domain="shop.example", private_key_pem=PEM, headers=DKIM_HEADERS
    )
    original = message(b"Hello", b"Body  with  blanks \r\n")
    ours, theirs = (s.sign(original, timestamp=1_740_000_000) for s in (SIGNER, dkimpy))
    assert dkim.verify(theirs, dnsfunc=dns)
    assert b"c=relaxed/relaxed" in theirs.replace(b"\r\n\t", b"").replace(b" ", b"")
    assert signed_headers(theirs) == signed_headers(ours)
    assert not dkim.verify(theirs.replace(b"One-Click", b"One-Clack"), dnsfunc=dns)


def test_a_non_rsa_key_is_a_config_error() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from relance_runtime.errors import ConfigError

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for signer in (DkimSigner, DkimpySigner):
        with pytest.raises(ConfigError):
            signer(selector="s", domain="d", private_key_pem=pem, headers=DKIM_HEADERS)


@given(st.text(min_size=1, max_size=200).filter(lambda s: s.strip() == s and "\x00" not in s))
def test_encoded_subjects_read_back(subject: str) -> None:
    raw = header("Subject", subject) + b"\r\n"
    parsed = message_from_bytes(raw, policy=policy.default)["Subject"]
    assert " ".join(str(parsed).split()) == " ".join(subject.split())
    assert all(len(line) < 80 for line in encoded_words(subject).split("\r\n"))


def test_no_header_injection() -> None:
    raw = header("Subject", "Hi\r\nBcc: evil@example.org")
    assert raw.count(b"\r\n") == 1 and b"\r\nBcc" not in raw


def test_the_setting_picks_the_signer() -> None:
    from relance_sender.email_message import DkimKey

    assert isinstance(DkimKey("s1", "shop.example", PEM).signer(), DkimSigner)
    assert isinstance(DkimKey("s1", "shop.example", PEM, "dkimpy").signer(), DkimpySigner)
