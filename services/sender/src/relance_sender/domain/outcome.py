"""What a provider said about one delivery attempt, and how SMTP / SMS replies map to it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

BounceKind = Literal["hard", "soft"]


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message (SMTP 250 after DATA, SMS 201)."""

    provider_message_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Deferred:
    """Temporary refusal: nothing was delivered, retrying later is safe."""

    reason: str
    code: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Permanent refusal. `suppress` puts the address on the suppression list at once."""

    reason: str
    code: str | None = None
    bounce: BounceKind | None = None
    suppress: bool = False


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """The provider may or may not have taken the message (broken after DATA, timeout)."""

    reason: str


DeliveryOutcome = Accepted | Deferred | Rejected | Ambiguous

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")

# Enhanced codes that mean the mailbox does not exist or is gone for good.
_NO_SUCH_MAILBOX = frozenset({"5.1.1", "5.1.10", "5.2.1"})


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of an SMTP reply text, if any."""
    match = _ENHANCED.match(text)
    return ".".join(match.groups()) if match else None


def classify_smtp_reply(code: int, text: str) -> DeliveryOutcome:
    """Map a final SMTP reply (to RCPT or to the end of DATA) to an outcome."""
    enhanced = enhanced_status(text)
    label = f"{code} {enhanced}" if enhanced else str(code)
    if 200 <= code < 300:
        return Accepted(detail=f"{code} {text}".strip())
    if 400 <= code < 500:
        return Deferred(reason=f"{code} {text}".strip(), code=label)
    if 500 <= code < 600:
        hard = enhanced in _NO_SUCH_MAILBOX or (enhanced is None and code in (550, 551, 553))
        return Rejected(
            reason=f"{code} {text}".strip(),
            code=label,
            bounce="hard" if hard else "soft",
            suppress=enhanced in _NO_SUCH_MAILBOX,
        )
    return Rejected(reason=f"unexpected SMTP reply {code} {text}".strip(), code=str(code))


# Twilio error codes (https://www.twilio.com/docs/api/errors).
TWILIO_OPTED_OUT = 21610
TWILIO_TOO_MANY_REQUESTS = 20429
_TWILIO_BAD_NUMBER = frozenset({21211, 21612, 21614, 21408})


def classify_twilio_error(
    http_status: int, error_code: int | None, message: str
) -> DeliveryOutcome:
    """Map a non-2xx answer of the Twilio message-create call to an outcome."""
    label = str(error_code) if error_code is not None else f"http {http_status}"
    reason = f"{label}: {message}".strip()
    if error_code == TWILIO_OPTED_OUT:
        return Rejected(reason=reason, code=label, bounce="hard", suppress=True)
    if error_code == TWILIO_TOO_MANY_REQUESTS or http_status == 429:
        return Deferred(reason=reason, code=label)
    if error_code in _TWILIO_BAD_NUMBER:
        return Rejected(reason=reason, code=label, bounce="hard", suppress=True)
    if http_status >= 500:
        # The create call has no idempotency key: a 5xx may hide a message that went out.
        return Ambiguous(reason=reason)
    return Rejected(reason=reason, code=label)


@dataclass(frozen=True, slots=True)
class Delivered:
    """The provider reports the message reached the handset (after accepting it)."""


@dataclass(frozen=True, slots=True)
class Undelivered:
    """The provider accepted the message, then reports it could not deliver it."""

    reason: str
    code: str | None
    bounce: BounceKind
    suppress: bool = False


DeliveryReport = Delivered | Undelivered

# Delivery error codes of a number that cannot receive SMS at all (unknown handset,
# landline, not a mobile number, invalid number).
_TWILIO_DEAD_NUMBER = frozenset({30005, 30006, 21614, 21211})


def classify_twilio_status(status: str, error_code: int | None) -> DeliveryReport | None:
    """Map a Twilio status callback (MessageStatus, ErrorCode) to a report; None for the
    statuses on the way (queued, sending, sent...), which settle nothing."""
    status = status.strip().lower()
    if status in ("delivered", "read"):
        return Delivered()
    if status not in ("undelivered", "failed"):
        return None
    label = str(error_code) if error_code is not None else None
    reason = f"{status}: {label or 'no error code'}"
    if error_code == TWILIO_OPTED_OUT or error_code in _TWILIO_DEAD_NUMBER:
        return Undelivered(reason=reason, code=label, bounce="hard", suppress=True)
    return Undelivered(reason=reason, code=label, bounce="soft")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff between attempts, up to a horizon counted from the first one."""

    initial: timedelta = timedelta(minutes=30)
    factor: float = 2.0
    maximum: timedelta = timedelta(hours=4)
    horizon: timedelta = timedelta(days=4)

    def next_attempt_at(
        self,
        *,
        first_attempt_at: datetime,
        attempts: int,
        now: datetime,
        retry_after_s: float | None = None,
    ) -> datetime | None:
        """When to try again after `attempts` attempts, or None once past the horizon."""
        delay = self.initial * (self.factor ** max(attempts - 1, 0))
        delay = min(delay, self.maximum)
        if retry_after_s is not None:
            delay = max(delay, timedelta(seconds=retry_after_s))
        at = now + delay
        if at > first_attempt_at + self.horizon:
            return None
        return at
