"""What the sender's use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from relance_sender.domain.ledger import Channel, LedgerRow, Purpose
from relance_sender.domain.outcome import DeliveryOutcome
from relance_sender.domain.policy import ConsentRecord, Suppression, SuppressionReason
from relance_sender.email_message import BuiltEmail


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    message_id: str
    to: str
    body: str


@dataclass(frozen=True, slots=True)
class SendCheck:
    """What is read before a send: the address's suppression and the contact's consent."""

    shop_id: str
    contact_key: str
    channel: Channel
    purpose: Purpose
    address: str


class EmailTransport(Protocol):
    name: str

    async def send(self, email: BuiltEmail) -> DeliveryOutcome: ...

    async def close(self) -> None: ...


class SmsTransport(Protocol):
    name: str

    async def send(self, sms: OutgoingSms) -> DeliveryOutcome: ...

    async def close(self) -> None: ...


class SenderTx(Protocol):
    """One transaction over the ledger, the suppression list and the consent table."""

    async def lock(self, message_id: str) -> LedgerRow | None:
        """The row, locked for the rest of the transaction (SELECT ... FOR UPDATE)."""
        ...

    async def insert(self, row: LedgerRow) -> bool:
        """Insert unless the message id exists; False when it already did."""
        ...

    async def save(self, row: LedgerRow) -> None: ...

    async def insert_many(self, rows: Sequence[LedgerRow]) -> set[str]:
        """`insert` for a batch in one statement; the message ids that were new."""
        ...

    async def lock_many(self, message_ids: Sequence[str]) -> dict[str, LedgerRow]:
        """`lock` for a batch, by message id (missing ids are absent)."""
        ...

    async def save_many(self, rows: Sequence[LedgerRow]) -> None:
        """`save` for a batch of distinct message ids."""
        ...

    async def claim_due(self, now: datetime, limit: int) -> Sequence[LedgerRow]:
        """Pending rows whose next attempt is due, locked, skipping rows others hold."""
        ...

    async def interrupted(
        self, *, owner: str | None, lease_expired_before: datetime, limit: int
    ) -> Sequence[LedgerRow]:
        """`sending` rows owned by `owner` (a restart) or whose lease ran out, locked;
        `owner=None`: only the expired ones."""
        ...

    async def find_contacts(self, shop_id: str, channel: Channel, address: str) -> Sequence[str]:
        """Contact keys we sent to at this address (for inbound STOP by phone number)."""
        ...

    async def suppression(
        self, shop_id: str, channel: Channel, address: str
    ) -> Suppression | None: ...

    async def suppress(self, entry: Suppression) -> None: ...

    async def unsuppress(self, shop_id: str, channel: Channel, address: str) -> None: ...

    async def count_soft_bounce(
        self, shop_id: str, channel: Channel, address: str, now: datetime
    ) -> int:
        """Count one more soft bounce for the address; returns the new total."""
        ...

    async def consent(
        self, shop_id: str, contact_key: str, channel: Channel, purpose: Purpose
    ) -> ConsentRecord | None: ...

    async def send_checks(
        self, shop_id: str, contact_key: str, channel: Channel, purpose: Purpose, address: str
    ) -> tuple[Suppression | None, ConsentRecord | None]:
        """`suppression(...)` and `consent(...)` together: one read before every send."""
        ...

    async def send_checks_many(
        self, checks: Sequence[SendCheck]
    ) -> list[tuple[Suppression | None, ConsentRecord | None]]:
        """`send_checks` for a batch, in the order asked."""
        ...

    async def record_consent(self, record: ConsentRecord) -> bool:
        """Keep the record if it is newer than what is stored; True when it was kept."""
        ...


class SenderStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[SenderTx]: ...

    async def save_claimed(self, row: LedgerRow, *, claimed: LedgerRow) -> bool:
        """Save `row`, on its own, if the ledger still holds the claim `claimed` (state
        `sending`, same owner and attempt); False when recovery took it over. One statement
        for the usual end of a send."""
        ...


# What happened to a message, once per message and attempt (see the README's metrics table).
SendMetric = Literal[
    "sent",
    "delivered",
    "failed",
    "bounced",
    "ambiguous",
    "suppressed",
    "deferred",
    "duplicate",
    "recovered_for_resend",
    "lost_claim",
]


class SenderMetrics(Protocol):
    """Counters of send outcomes, by channel and a label or two (cause, kind, reason)."""

    def count(self, metric: SendMetric, channel: Channel, **labels: str) -> None: ...


__all__ = [
    "EmailTransport",
    "OutgoingSms",
    "SendCheck",
    "SendMetric",
    "SenderMetrics",
    "SenderStore",
    "SenderTx",
    "SmsTransport",
    "SuppressionReason",
]
