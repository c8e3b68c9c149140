"""The feedback service's exception root."""

from __future__ import annotations

from relance_runtime.errors import RelanceError


class FeedbackError(RelanceError):
    """Root of every error raised by `relance_feedback`."""


class InvalidAnswer(FeedbackError):
    """An answer that carries neither a satisfaction choice nor an NPS score."""


class InvalidWebhookSecret(FeedbackError):
    """A signing secret that is not `whsec_` + base64 of 24 to 64 bytes."""


class InvalidAllowlist(FeedbackError):
    """An allow-list entry that is neither a host name, an IP address nor a CIDR."""


class DestinationRefused(FeedbackError):
    """The webhook target resolves to an address the SSRF guard refuses."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {address} ({reason})")
        self.host = host
        self.address = address
        self.reason = reason


class InvalidLeaveReason(FeedbackError):
    """A leave reason that is not one of `LEAVE_REASONS`, or a comment that is too long."""
