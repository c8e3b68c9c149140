"""DKIM signing (RFC 6376), rsa-sha256, relaxed/relaxed, by one of two signers:

- `DkimSigner` (the default, `RELANCE_SENDER_DKIM_SIGNER=openssl`): dkimpy's canonical forms,
  RSA by OpenSSL through `cryptography` (~0.3 ms a signature);
- `DkimpySigner` (`dkimpy`): dkimpy itself, whose RSA is pure Python (~7 ms a signature:
  about 140 emails/s per core), for those who want the reference implementation.

Both put the same headers in h=; tests verify every signature with `dkim.verify`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import Final, Protocol

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relance_runtime.errors import ConfigError

# Only runs that change: two or more blanks, or any tab.
_WSP_RUN: Final = re.compile(rb"[ \t]{2,}|\t")
_FOLD: Final = re.compile(rb"\r?\n")
_TRAILING_WSP: Final = re.compile(rb"[ \t]+\r\n")


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfold, collapse whitespace, trim around the colon."""
    if b"\n" in value:
        value = _FOLD.sub(b"", value)
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.strip().lower() + b":" + value.strip(b" ") + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4, exactly as dkimpy does it: drop blanks before line ends, collapse
    the rest, drop trailing empty lines; an empty body stays empty."""
    # memchr-speed checks first: quoted-printable bodies rarely need either pass.
    if b" \r\n" in body or b"\t" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"  " in body or b"\t" in body:
        body = _WSP_RUN.sub(b" ", body)
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    body = body[:end] + b"\r\n"
    return b"" if body == b"\r\n" else body


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers as (name, raw value incl. folds, without the final CRLF) and the body."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, body = message, b""
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            headers.append((name, value))
    return headers, body


def _fold_b64(value: bytes, width: int = 72) -> bytes:
    return b"\r\n\t".join(value[i : i + width] for i in range(0, len(value), width))


class MessageSigner(Protocol):
    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        """The message with its DKIM-Signature header prepended."""
        ...


class DkimSigner:
    """Signs with one key for `domain` under `selector`; `headers` are the names in h=."""

    def __init__(
        self, *, selector: str, domain: str, private_key_pem: bytes, headers: Sequence[bytes]
    ) -> None:
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"unreadable DKIM private key: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the DKIM key must be an RSA private key (rsa-sha256)")
        self._key = key
        self._selector = selector.encode()
        self._domain = domain.encode()
        self._wanted = tuple(h.lower() for h in headers)

    def signature_header(self, message: bytes, *, timestamp: int) -> bytes:
        """`DKIM-Signature: ...\\r\\n` for `message` (CRLF line endings)."""
        headers, body = split_message(message)
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        # For each name in h=, the last instance not yet used (RFC 6376 5.4.2).
        by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for name, value in headers:
            by_name.setdefault(name.strip().lower(), []).append((name, value))
        signed_names: list[bytes] = []
        hashed = hashlib.sha256()
        for wanted in self._wanted:
            instances = by_name.get(wanted)
            if instances:
                hashed.update(relaxed_header(*instances.pop()))
                signed_names.append(wanted)
        prefix = (
            b" v=1; a=rsa-sha256; c=relaxed/relaxed; d="
            + self._domain
            + b"; s="
            + self._selector
            + b";\r\n\tt="
            + str(timestamp).encode()
            + b"; h="
            + b":".join(signed_names)
            + b";\r\n\tbh="
            + body_hash
            + b";\r\n\tb="
        )
        hashed.update(relaxed_header(b"dkim-signature", prefix)[:-2])
        signature = self._key.sign(hashed.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return b"DKIM-Signature:" + prefix + _fold_b64(base64.b64encode(signature)) + b"\r\n"

    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        """The message with its DKIM-Signature header prepended."""
        return self.signature_header(message, timestamp=timestamp) + message


class DkimpySigner:
    """dkimpy's `dkim.sign` with the same key, domain, selector and h= list. dkimpy reads
    the clock for t= itself, so `timestamp` is not used."""

    def __init__(
        self, *, selector: str, domain: str, private_key_pem: bytes, headers: Sequence[bytes]
    ) -> None:
        # The same checks as the OpenSSL signer: a bad key fails at start, not at send time.
        DkimSigner(selector=selector, domain=domain, private_key_pem=private_key_pem, headers=())
        self._selector = selector.encode()
        self._domain = domain.encode()
        self._key = private_key_pem
        self._headers = [h.lower() for h in headers]

    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        del timestamp
        present = {name.strip().lower() for name, _ in split_message(message)[0]}
        signature: bytes = dkim.sign(
            message,
            self._selector,
            self._domain,
            self._key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h for h in self._headers if h in present],
        )
        return signature + message
