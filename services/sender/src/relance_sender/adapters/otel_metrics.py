"""Send counters as OpenTelemetry metrics (`relance.sender.*`), exported wherever the
process's meter provider sends them (`RELANCE_OTEL_EXPORTER`)."""

from __future__ import annotations

from typing import Final, get_args

from opentelemetry.metrics import Counter, Meter

from relance_sender.domain.ledger import Channel
from relance_sender.ports import SendMetric

SENDER_METER: Final = "relance.sender"

DESCRIPTIONS: Final[dict[SendMetric, str]] = {
    "sent": "Messages the provider accepted (SMTP 250, SMS 2xx).",
    "delivered": "Messages the provider reports delivered (SMS delivery reports).",
    "failed": "Messages given up on, by cause: refused, gave_up, render, recipient, expired.",
    "bounced": "Bounces, at send time or reported later, by kind (hard, soft).",
    "ambiguous": "Sends whose outcome is unknown and are never resent (during: delivery, "
    "recovery after a crash).",
    "suppressed": "Sends stopped by the suppression list (reason) or a missing consent.",
    "deferred": "Temporary refusals: the message is retried later.",
    "duplicate": "Redelivered requests for a message already settled.",
    "recovered_for_resend": "Transactional messages a crash interrupted, queued to resend.",
    "lost_claim": "Sends whose claim another instance recovered before they settled.",
}


class OtelSenderMetrics:
    def __init__(self, meter: Meter) -> None:
        self._counters: dict[str, Counter] = {
            name: meter.create_counter(
                f"relance.sender.{name}", unit="{message}", description=DESCRIPTIONS[name]
            )
            for name in get_args(SendMetric)
        }

    def count(self, metric: SendMetric, channel: Channel, **labels: str) -> None:
        self._counters[metric].add(1, {"channel": channel, **labels})
