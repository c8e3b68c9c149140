"""The clock is read once at the edge and `now` is passed down; this is that edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock UTC, shifted by an offset read from a file when one is configured.

    The offset file (`RELANCE_CLOCK_OFFSET_FILE`, seconds as a decimal number) lets an
    end-to-end test move every service's time forward together without real waiting.
    It is re-read at most once a second.
    """

    def __init__(self, offset_file: Path | None = None) -> None:
        self._offset_file = offset_file
        self._offset = timedelta(0)
        self._read_at = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        wall = datetime.now(UTC)
        if self._offset_file is not None and (wall - self._read_at).total_seconds() >= 1.0:
            self._read_at = wall
            try:
                self._offset = timedelta(seconds=float(self._offset_file.read_text().strip()))
            except (OSError, ValueError):
                self._offset = timedelta(0)
        return wall + self._offset


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta

    def set(self, at: datetime) -> None:
        self._at = at
