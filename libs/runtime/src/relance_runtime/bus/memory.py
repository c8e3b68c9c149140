"""An in-memory bus for unit tests of pure cores. Same contract, no durability."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

from relance_events import Publishable
from relance_runtime.bus.messages import TopicNames, partition_for, to_message
from relance_runtime.bus.ports import BusConsumer, OutgoingMessage, Record, TopicPartition
from relance_runtime.errors import BusUnavailable, RebalancedAway


class InMemoryBus:
    def __init__(self, names: TopicNames | None = None) -> None:
        self.names = names or TopicNames()
        self._partitions = {name: topic.partitions for name, topic in self.names.all()}
        self.log: dict[TopicPartition, list[Record]] = {}
        self.committed: dict[tuple[str, TopicPartition], int] = {}
        self.members: dict[str, list[str]] = {}
        self.available = True
        self._appended = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ensure_topics(self) -> None:
        return None

    async def ping(self) -> bool:
        return self.available

    async def publish(self, events: Sequence[Publishable]) -> None:
        await self.publish_raw([to_message(e, self.names) for e in events])

    async def publish_raw(self, messages: Sequence[OutgoingMessage]) -> None:
        if not self.available:
            raise BusUnavailable("the in-memory bus was switched off")
        for m in messages:
            if m.topic not in self._partitions:
                raise BusUnavailable(f"unknown topic {m.topic!r}")
        for i, m in enumerate(messages):
            tp = TopicPartition(m.topic, partition_for(m.key, self._partitions[m.topic], i))
            entries = self.log.setdefault(tp, [])
            entries.append(
                Record(m.topic, tp.partition, len(entries), m.key, m.value, tuple(m.headers))
            )
        async with self._appended:
            self._appended.notify_all()

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic (tests inspect what was published)."""
        return sorted(
            (r for tp, rs in self.log.items() if tp.topic == topic for r in rs),
            key=lambda r: (r.partition, r.offset),
        )

    def consumer(self, group: str, topics: Sequence[str]) -> BusConsumer:
        return _MemoryConsumer(self, self.names.group(group), list(topics))

    async def wait_for_append(self, timeout_s: float) -> None:
        async with self._appended:
            try:
                await asyncio.wait_for(self._appended.wait(), timeout=timeout_s)
            except TimeoutError:
                return

    def partitions_of(self, topics: Sequence[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in sorted(topics) for p in range(self._partitions[t])]


class _MemoryConsumer:
    def __init__(self, bus: InMemoryBus, group: str, topics: list[str]) -> None:
        self._bus = bus
        self._group = group
        self._topics = topics
        self._id = uuid.uuid4().hex
        self._positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self._bus.members.setdefault(self._group, []).append(self._id)

    def assignment(self) -> frozenset[TopicPartition]:
        members = sorted(self._bus.members.get(self._group, []))
        if self._id not in members:
            return frozenset()
        me = members.index(self._id)
        return frozenset(
            tp
            for i, tp in enumerate(self._bus.partitions_of(self._topics))
            if i % len(members) == me
        )

    async def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        out = self._fetch(max_records)
        if not out and timeout_s > 0:
            await self._bus.wait_for_append(timeout_s)
            out = self._fetch(max_records)
        return out

    def _fetch(self, max_records: int) -> list[Record]:
        owned = self.assignment()
        for tp in list(self._positions):
            if tp not in owned:
                del self._positions[tp]
        out: list[Record] = []
        for tp in sorted(owned, key=lambda t: (t.topic, t.partition)):
            position = self._positions.setdefault(tp, self._bus.committed.get((self._group, tp), 0))
            batch = self._bus.log.get(tp, [])[position : position + max_records - len(out)]
            out.extend(batch)
            self._positions[tp] = position + len(batch)
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        owned = self.assignment()
        lost = [tp for tp in offsets if tp not in owned]
        if lost:
            raise RebalancedAway(f"partitions no longer owned: {lost}")
        committed = self._bus.committed
        for tp, offset in offsets.items():  # never back: a late commit after a rebalance
            committed[(self._group, tp)] = max(committed.get((self._group, tp), 0), offset)

    async def stop(self) -> None:
        members = self._bus.members.get(self._group, [])
        if self._id in members:
            members.remove(self._id)
        self._positions.clear()
