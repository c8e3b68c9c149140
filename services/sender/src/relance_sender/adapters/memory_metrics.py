"""Send counters kept in memory: the default of `SendMessage`, and what tests read."""

from __future__ import annotations

from collections import Counter

from relance_sender.domain.ledger import Channel
from relance_sender.ports import SendMetric

LabelSet = frozenset[tuple[str, str]]


class CountingMetrics:
    def __init__(self) -> None:
        self.counts: Counter[tuple[SendMetric, LabelSet]] = Counter()

    def count(self, metric: SendMetric, channel: Channel, **labels: str) -> None:
        self.counts[metric, frozenset({"channel": channel, **labels}.items())] += 1

    def total(self, metric: SendMetric, **labels: str) -> int:
        """Everything counted under `metric` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(
            n for (name, have), n in self.counts.items() if name == metric and wanted <= have
        )
