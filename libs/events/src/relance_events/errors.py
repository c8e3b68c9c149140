"""The exception root of the event contract."""


class EventError(Exception):
    """Root of every error raised by `relance_events`."""


class DecodeError(EventError):
    """Bytes that are not a valid event of a known schema: a poison message."""


class UnsupportedSchemaVersion(DecodeError):
    """A newer, breaking schema than this build can read; dead-letter and replay after upgrade."""
