"""The base of the engine's immutable state records.

The state is `msgspec` structs, not pydantic models: a timer firing decodes, decides on
and encodes a whole contact state, and with pydantic models reading and writing a 3-6 KB
state took about 110 µs of a firing (about 25 µs as structs packed with MessagePack, see
`adapters/state_codec.py`). States are built by the engine from validated events, so
nothing is lost by skipping validation on construction; decoding a stored state is typed.
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
