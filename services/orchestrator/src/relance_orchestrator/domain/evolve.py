"""The base of the engine's immutable state records.

The state is `msgspec` structs, not pydantic models: a timer firing decodes, decides on
and encodes a whole contact state, and pydantic's validation and serialization of a
5 KB state were most of a firing's cost (77 µs to read it, 33 µs to write it, against
8 µs and 2 µs here). States are built by the engine from validated events, so nothing is
lost by skipping validation on construction; decoding a stored state is still typed.
"""

from __future__ import annotations

from typing import Any, Self

import msgspec


class Frozen(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    forbid_unknown_fields=True,
):
    """Immutable record; fields left at their default are not stored. Subclasses say
    `frozen=True, kw_only=True` again (msgspec applies `kw_only` to the fields a class
    itself defines; mypy reads `frozen` per class).

    Stored states are read back by field name: a field may be added with a default;
    removing or renaming one needs a migration (an unknown field makes a state unreadable,
    as a state written by a newer version must not be silently cut down)."""

    def evolve(self, update: dict[str, Any]) -> Self:
        """A copy with some fields replaced (the engine's `model_copy(update=...)`)."""
        return msgspec.structs.replace(self, **update)
