"""Partition lists from the broker (a group-less consumer only knows topics it was assigned)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


async def partitions_of(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, list[int]]:
    """Partition ids per topic; topics the broker does not have are left out."""
    if not topics:
        return {}
    described = await admin.describe_topics(list(topics))
    return {
        str(t["topic"]): sorted(int(p["partition"]) for p in t.get("partitions") or ())
        for t in described
        if t.get("error_code", 0) == 0 and t.get("partitions")
    }


async def close_quietly(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    """Close both clients; a client that never started, or a broker gone, is not an error."""
    for close in (admin.close, consumer.stop):
        try:
            await close()
        except (KafkaError, RuntimeError):
            continue
