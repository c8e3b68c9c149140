"""Build the MIME message for one email: headers, both parts, tracking, unsubscribe, DKIM."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from typing import Any, Final, Literal

from relance_events.payloads import LEAVE_REASONS
from relance_runtime.tokens import TokenSigner
from relance_sender.dkim_signing import DkimpySigner, DkimSigner, MessageSigner
from relance_sender.domain.request import SendRequest
from relance_sender.errors import RenderError
from relance_sender.rendering.renderer import RenderedEmail, Renderer

# Signed by DKIM; both RFC 8058 headers must be in h= (dkimpy's default leaves out -Post).
DKIM_HEADERS: Final[tuple[bytes, ...]] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
)

SURVEY_ANSWERS: Final = frozenset({"very_satisfied", "satisfied", "not_satisfied"})
_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    """Who mail comes from. `feedback_sender_id` is the last field of Feedback-ID."""

    marketing_from: str
    transactional_from: str
    message_id_domain: str
    feedback_sender_id: str = "relance"
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    domain: str
    private_key_pem: bytes = field(repr=False)
    implementation: Literal["openssl", "dkimpy"] = "openssl"

    def signer(self) -> MessageSigner:
        make = DkimSigner if self.implementation == "openssl" else DkimpySigner
        return make(
            selector=self.selector,
            domain=self.domain,
            private_key_pem=self.private_key_pem,
            headers=DKIM_HEADERS,
        )


@dataclass(frozen=True, slots=True)
class BuiltEmail:
    message_id: str
    message_id_header: str
    envelope_from: str
    to: str
    subject: str
    data: bytes


class TrackingLinks:
    """Signed links for one message: pixel, clicks, unsubscribe, survey answers and leave
    reasons."""

    def __init__(self, signer: TokenSigner, public_url: str, request: SendRequest) -> None:
        self._signer = signer
        self._base = public_url.rstrip("/")
        self._request = request
        self._common: dict[str, Any] = {
            "s": request.shop_id,
            "c": request.contact_key,
            "m": request.message_id,
        }
        self._tracking = {**self._common, "pl": request.plan, "st": request.step}
        self._unsubscribe: str | None = None
        # Both parts link the same URLs: one token per URL.
        self._clicks: dict[str, str] = {}
        self._reasons: dict[str, str] = {}

    def pixel(self) -> str:
        return f"{self._base}/t/o/{self._signer.mint('open', self._tracking)}.gif"

    def click(self, url: str) -> str:
        link = self._clicks.get(url)
        if link is None:
            if not url.startswith(("https://", "http://")):
                raise RenderError(f"only http(s) links can be tracked: {url!r}")
            token = self._signer.mint("click", {**self._tracking, "u": url})
            link = self._clicks[url] = f"{self._base}/t/c/{token}"
        return link

    def unsubscribe(self) -> str:
        if self._unsubscribe is None:
            claims = {**self._common, "ch": self._request.channel, "pu": "marketing"}
            self._unsubscribe = f"{self._base}/u/{self._signer.mint('unsub', claims)}"
        return self._unsubscribe

    def survey(self, answer: str) -> str:
        if answer not in SURVEY_ANSWERS:
            raise RenderError(f"unknown survey answer {answer!r}")
        order_id = self._request.context.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise RenderError("a survey needs `order_id` in the message context")
        claims = {**self._common, "o": order_id, "a": answer}
        return f"{self._base}/s/{self._signer.mint('survey', claims)}"

    def reason(self, reason: str) -> str:
        """One click on why the contact left; feedback serves `/r/` (confirm, then record)."""
        link = self._reasons.get(reason)
        if link is None:
            if reason not in LEAVE_REASONS:
                raise RenderError(f"unknown leave reason {reason!r}")
            token = self._signer.mint("reason", {**self._tracking, "r": reason})
            link = self._reasons[reason] = f"{self._base}/r/{token}"
        return link


class PlainLinks:
    """Untracked links, for transactional mail."""

    def __init__(self, inner: TrackingLinks) -> None:
        self._inner = inner

    def click(self, url: str) -> str:
        return url

    def survey(self, answer: str) -> str:
        return self._inner.survey(answer)

    def reason(self, reason: str) -> str:
        return self._inner.reason(reason)


def _feedback_part(value: str | None) -> str:
    return _FEEDBACK_UNSAFE.sub("_", value or "none")[:64]


@lru_cache(maxsize=16)
def _date_header(now: datetime) -> bytes:
    """`Date:` to the second: the messages of one second share it."""
    return f"Date: {format_datetime(now)}\r\n".encode("ascii")


@lru_cache(maxsize=1024)
def feedback_id(plan: str, step: str, shop_id: str, sender_id: str) -> str:
    """`plan:step:shop:sender` (Gmail's Feedback-ID), each field cut to a safe token."""
    return ":".join(_feedback_part(v) for v in (plan, step, shop_id, sender_id))


_CRLF_RUN: Final = re.compile(r"[\r\n]+\s*")


def _one_line(value: str) -> str:
    """No header injection: a value never spans lines of its own making."""
    if "\r" in value or "\n" in value:
        return _CRLF_RUN.sub(" ", value).strip()
    return value


# What a reader would not show as written: control characters, or text that reads as an
# RFC 2047 encoded word (readers decode `=?utf-8?q?...?=` even where nobody encoded it).
_NOT_VERBATIM: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|=\?")


def header(name: str, value: str) -> bytes:
    """One header line; RFC 2047 (UTF-8) when the value is not plain ASCII, is too long,
    or would not read back as written."""
    value = _one_line(value)
    if value.isascii() and len(name) + len(value) < 900 and not _NOT_VERBATIM.search(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return f"{name}: {encoded_words(value)}\r\n".encode("ascii")


def encoded_words(value: str, max_bytes: int = 45) -> str:
    """RFC 2047 `=?utf-8?b?...?=` words (each under 76 characters), folded between words;
    a character's UTF-8 bytes never straddle two words."""
    data = value.encode("utf-8")
    words: list[str] = []
    start, size = 0, len(data)
    while start < size or not words:
        end = min(start + max_bytes, size)
        while end < size and data[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        words.append(base64.b64encode(data[start:end]).decode("ascii"))
        start = end
    return "\r\n ".join(f"=?utf-8?b?{word}?=" for word in words)


# A display name stays one encoded word up to this many UTF-8 bytes (the line stays under
# 998 octets): readers disagree on the space between two words of a name (RFC 2047 says
# none, the stdlib keeps the fold), so a name is only split when it must be.
_NAME_WORD_BYTES: Final = 540


def address_header(name: str, mailbox: str) -> bytes:
    """`Display Name <addr>`, the display name quoted, or encoded when not plain ASCII."""
    display, addr = parseaddr(_one_line(mailbox))
    if not display:
        return f"{name}: {addr}\r\n".encode()
    if display.isascii() and not _NOT_VERBATIM.search(display):
        return f"{name}: {formataddr((display, addr))}\r\n".encode()
    return f"{name}: {encoded_words(display, _NAME_WORD_BYTES)} <{addr}>\r\n".encode()


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends. Line by line: QP encodes each line on
    its own, and most lines (the layout's) are the same in every message, so they come
    from a cache."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return b"\r\n".join(map(_qp_line, normalised.split(b"\n")))


@lru_cache(maxsize=4096)
def _qp_line(line: bytes) -> bytes:
    return binascii.b2a_qp(line, quotetabs=False, istext=True).replace(b"\n", b"\r\n")


def alternative_body(text: str, html: str, boundary: str) -> bytes:
    b = boundary.encode("ascii")
    return b"".join(
        (
            b"--" + b + b"\r\n",
            b'Content-Type: text/plain; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            b"\r\n--" + b + b"\r\n",
            b'Content-Type: text/html; charset="utf-8"\r\n',
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            b"\r\n--" + b + b"--\r\n",
        )
    )


class EmailBuilder:
    """Builds the MIME bytes directly (CRLF, quoted-printable UTF-8 parts): the stdlib
    header registry costs milliseconds per message, and the output is checked against
    the stdlib parser and `dkim.verify` in the tests."""

    def __init__(
        self,
        *,
        renderer: Renderer,
        signer: TokenSigner,
        public_url: str,
        identity: SenderIdentity,
        dkim_key: DkimKey | None = None,
    ) -> None:
        self._renderer = renderer
        self._signer = signer
        self._public_url = public_url
        self._identity = identity
        self._dkim = dkim_key.signer() if dkim_key is not None else None
        self._from = {
            True: address_header("From", identity.marketing_from),
            False: address_header("From", identity.transactional_from),
        }
        self._envelope_from = {
            True: parseaddr(identity.marketing_from)[1],
            False: parseaddr(identity.transactional_from)[1],
        }
        self._reply_to = address_header("Reply-To", identity.reply_to) if identity.reply_to else b""

    @property
    def renderer(self) -> Renderer:
        return self._renderer

    def message_id_header(self, message_id: str) -> str:
        """Stable per message id, so a resent transactional copy folds into the first."""
        return f"<{message_id}@{self._identity.message_id_domain}>"

    def render(self, request: SendRequest) -> tuple[RenderedEmail, TrackingLinks]:
        links = TrackingLinks(self._signer, self._public_url, request)
        if request.purpose == "marketing":
            rendered = self._renderer.render_email(
                request, links, unsubscribe_url=links.unsubscribe(), pixel_url=links.pixel()
            )
        else:
            rendered = self._renderer.render_email(
                request, PlainLinks(links), unsubscribe_url=None, pixel_url=None
            )
        return rendered, links

    def build(self, request: SendRequest, *, to: str, now: datetime) -> BuiltEmail:
        """Raises RenderError when the template or the context cannot make this message."""
        rendered, links = self.render(request)
        marketing = request.purpose == "marketing"
        message_id_header = self.message_id_header(request.message_id)
        # Deterministic, and "=_" can never occur in quoted-printable text.
        boundary = "=_rl_" + hashlib.sha256(request.message_id.encode()).hexdigest()[:32]
        lines = [
            self._from[marketing],
            f"To: {_one_line(to)}\r\n".encode(),
            self._reply_to,
            header("Subject", rendered.subject),
            _date_header(now.replace(microsecond=0)),
            header("Message-ID", message_id_header),
            header(
                "Feedback-ID",
                feedback_id(
                    request.plan, request.step, request.shop_id, self._identity.feedback_sender_id
                ),
            ),
        ]
        if marketing:
            lines.append(header("List-Unsubscribe", f"<{links.unsubscribe()}>"))
            lines.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        lines += [
            header("X-Relance-Message-Id", request.message_id),
            b"MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
            alternative_body(rendered.text, rendered.html, boundary),
        ]
        data = b"".join(lines)
        if self._dkim is not None:
            data = self._dkim.sign(data, timestamp=int(now.timestamp()))
        return BuiltEmail(
            message_id=request.message_id,
            message_id_header=message_id_header,
            envelope_from=self._envelope_from[marketing],
            to=to,
            subject=rendered.subject,
            data=data,
        )
