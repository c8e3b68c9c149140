"""The exception root of ingest."""

from __future__ import annotations

from typing import Any

from relance_runtime.errors import RelanceError


class IngestError(RelanceError):
    """Root of every error raised by `relance_ingest`."""


class RequestRejected(IngestError):
    """A client error answered with `status` and `{"errors": [...]}`."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{status}: {errors[:3]}")
        self.status = status
        self.errors = errors


class BodyTooLarge(IngestError):
    """The (decoded) body went past its limit."""


class BadBody(IngestError):
    """The body cannot be decoded (broken gzip stream, unknown encoding)."""
