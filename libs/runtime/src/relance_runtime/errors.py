"""The exception root of the runtime, with retry signals explicit."""


class RelanceError(Exception):
    """Root of every error raised by `relance_runtime` (and the root services subclass)."""


class TransientError(RelanceError):
    """Worth retrying after a backoff: the broker, the database or a provider is away."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(RelanceError):
    """Retrying cannot help; a consumer dead-letters the message and moves on."""


class BusUnavailable(TransientError):
    """The bus did not acknowledge a publish; nothing may be reported as accepted."""


class ConfigError(RelanceError):
    """Settings that cannot work (missing secret, malformed URL...)."""


class RebalancedAway(TransientError):
    """A commit for partitions this member no longer owns; another member took over."""
