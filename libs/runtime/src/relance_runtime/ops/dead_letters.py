"""Dead letters as operators see them, and which ones a replay publishes (pure: no I/O).

The consumer loop dead-letters a record with its original key, bytes and headers, plus
`dlq-reason`, `dlq-source-topic`, `dlq-source-partition`, `dlq-source-offset`,
`dlq-consumer-group` and `dlq-at`. A replay re-publishes the original key, bytes and headers
(without the `dlq-*` ones) to the source topic; consumers' inboxes drop what they already
applied.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from relance_events import DecodeError, decode
from relance_runtime.bus.ports import OutgoingMessage, Record
from relance_runtime.errors import RelanceError

DLQ_HEADER_PREFIX = "dlq-"

ReplayState = Literal["published", "covered"]


class OpsError(RelanceError):
    """An operations command cannot do what was asked (bad id, missing table, timeout)."""


@dataclass(frozen=True, slots=True)
class LetterId:
    """Where a dead letter sits in the DLQ topic; written `partition:offset`."""

    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> LetterId:
        partition, sep, offset = text.strip().partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise OpsError(f"a dead letter id is partition:offset (e.g. 0:17), not {text!r}")
        return cls(int(partition), int(offset))

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class SourcePlace:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Replay:
    """How a dead letter was replayed: `published` its bytes, or `covered` by an earlier copy."""

    state: ReplayState
    at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: LetterId
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]  # the original headers, without dlq-*
    reason: str
    source: SourcePlace | None
    consumer_group: str
    dead_lettered_at: str | None
    event_type: str | None
    event_id: str | None
    replay: Replay | None = None

    def to_message(self) -> OutgoingMessage:
        """The original message, as it was first published to its source topic."""
        if self.source is None:
            raise OpsError(f"dead letter {self.id} does not say where it came from")
        return OutgoingMessage(
            topic=self.source.topic, key=self.key, value=self.value, headers=self.headers
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "reason": self.reason,
            "source_topic": self.source.topic if self.source else None,
            "source_partition": self.source.partition if self.source else None,
            "source_offset": self.source.offset if self.source else None,
            "consumer_group": self.consumer_group,
            "dead_lettered_at": self.dead_lettered_at,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "bytes": len(self.value),
            "replay": self.replay.state if self.replay else None,
            "replayed_at": self.replay.at.isoformat() if self.replay else None,
        }


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _int(value: bytes | None) -> int | None:
    text = _text(value)
    return int(text) if text is not None and text.strip().lstrip("-").isdigit() else None


def parse_dead_letter(record: Record) -> DeadLetter:
    """Read a DLQ record; whatever header is missing or garbled is left empty."""
    dlq = {k: v for k, v in record.headers if k.startswith(DLQ_HEADER_PREFIX)}
    original = tuple((k, v) for k, v in record.headers if not k.startswith(DLQ_HEADER_PREFIX))
    topic = _text(dlq.get("dlq-source-topic"))
    partition = _int(dlq.get("dlq-source-partition"))
    offset = _int(dlq.get("dlq-source-offset"))
    source = (
        SourcePlace(topic, partition, offset)
        if topic and partition is not None and offset is not None
        else None
    )
    event_type, event_id = _identify(record.value, original)
    return DeadLetter(
        id=LetterId(record.partition, record.offset),
        key=record.key,
        value=record.value,
        headers=original,
        reason=_text(dlq.get("dlq-reason")) or "",
        source=source,
        consumer_group=_text(dlq.get("dlq-consumer-group")) or "",
        dead_lettered_at=_text(dlq.get("dlq-at")),
        event_type=event_type,
        event_id=event_id,
    )


def _identify(value: bytes, headers: Sequence[tuple[str, bytes]]) -> tuple[str | None, str | None]:
    """Event type and id: from the bytes when they decode, else from the producer's headers."""
    try:
        event = decode(value)
    except DecodeError:
        named = dict(headers)
        return _text(named.get("event-type")), _text(named.get("event-id"))
    return event.type, str(event.event_id)


def with_replays(
    letters: Iterable[DeadLetter], replays: Mapping[LetterId, Replay]
) -> list[DeadLetter]:
    return [
        DeadLetter(
            id=letter.id,
            key=letter.key,
            value=letter.value,
            headers=letter.headers,
            reason=letter.reason,
            source=letter.source,
            consumer_group=letter.consumer_group,
            dead_lettered_at=letter.dead_lettered_at,
            event_type=letter.event_type,
            event_id=letter.event_id,
            replay=replays.get(letter.id),
        )
        for letter in letters
    ]


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    publish: tuple[DeadLetter, ...]  # one per source record, in source order
    covered: tuple[DeadLetter, ...]  # same source record as a published or earlier replay
    already: tuple[DeadLetter, ...]  # replayed before
    unreplayable: tuple[tuple[DeadLetter, str], ...]  # (letter, why)


def plan_replay(
    letters: Sequence[DeadLetter],
    *,
    replayed: Collection[LetterId],
    replayed_sources: Collection[SourcePlace],
    topics: Collection[str],
) -> ReplayPlan:
    """Decide what a replay publishes.

    A source record is published at most once, ever: a copy appended to its topic reaches
    every consumer group of that topic, including groups that dead-lettered the original
    later than the replay (they read the copy after the original).
    """
    publish: list[DeadLetter] = []
    covered: list[DeadLetter] = []
    already: list[DeadLetter] = []
    unreplayable: list[tuple[DeadLetter, str]] = []
    sources = set(replayed_sources)
    seen: set[LetterId] = set()
    # In source order, so one contact's replayed records keep their original order.
    for letter in sorted(letters, key=_source_order):
        if letter.id in seen:
            continue
        seen.add(letter.id)
        if letter.id in replayed:
            already.append(letter)
        elif letter.source is None:
            unreplayable.append((letter, "no dlq-source-* headers"))
        elif letter.source.topic not in topics:
            unreplayable.append((letter, f"unknown source topic {letter.source.topic!r}"))
        elif letter.source in sources:
            covered.append(letter)
        else:
            sources.add(letter.source)
            publish.append(letter)
    return ReplayPlan(tuple(publish), tuple(covered), tuple(already), tuple(unreplayable))


def _source_order(letter: DeadLetter) -> tuple[str, int, int, int, int]:
    src = letter.source
    return (
        src.topic if src else "",
        src.partition if src else -1,
        src.offset if src else -1,
        letter.id.partition,
        letter.id.offset,
    )
