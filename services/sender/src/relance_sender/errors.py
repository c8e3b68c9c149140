"""The sender's exception root and the errors a caller must tell apart."""

from __future__ import annotations

from relance_runtime.errors import RelanceError


class SenderError(RelanceError):
    """Root of every error raised by `relance_sender`."""


class RenderError(SenderError):
    """A template could not be rendered (missing variable, unknown template, bad value).

    The message is failed visibly (a `message.failed` event and a log), never sent with blanks.
    """

    def __init__(self, message: str, *, template: str | None = None) -> None:
        super().__init__(message)
        self.template = template


class InvalidRecipient(SenderError):
    """No usable address for the channel (missing email, phone not valid E.164...)."""


class IllegalTransition(SenderError):
    """A send-ledger transition that the state machine does not allow; nothing changed."""


class InvalidWebhook(SenderError):
    """An inbound provider webhook with a missing or wrong signature, or unreadable fields."""
