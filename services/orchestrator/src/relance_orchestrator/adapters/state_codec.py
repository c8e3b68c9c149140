"""How a contact state is stored: MessagePack, by field name, fields at their default left out.

A state rewritten on every decision must be cheap to read and write and small: a typical
state packs to about a third of its JSON, so its row usually stays inline and uncompressed
(no TOAST), and decoding it is a few microseconds. States written before this format (JSON
in the `state` jsonb column) are still read, and are rewritten packed on their next change.
Datetimes come back in UTC (the same instants; MessagePack timestamps carry no offset).
"""

from __future__ import annotations

from typing import Any

import msgspec

from relance_orchestrator.domain.state import ContactState

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ContactState)
_legacy_decoder = msgspec.json.Decoder(ContactState)

UnreadableStateError = msgspec.DecodeError  # also raised for a state of the wrong shape


def pack_state(state: ContactState) -> bytes:
    return _encoder.encode(state)


def state_as_builtins(state: ContactState) -> dict[str, Any]:
    """The state as JSON-ready data (fields at their default left out), for operators."""
    data: dict[str, Any] = msgspec.to_builtins(state)
    return data


def unpack_state(packed: bytes | None, legacy_json: str | None = None) -> ContactState:
    """The stored state: `packed`, else the JSON an earlier version wrote."""
    if packed is not None:
        return _decoder.decode(packed)
    if legacy_json is None:
        raise msgspec.DecodeError("the contact row holds no state")
    return _legacy_decoder.decode(legacy_json)
