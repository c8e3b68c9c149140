"""RFM straight from an orders file: the same scoring as the service, without a database."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from relance_events.payloads import RfmSegment
from relance_segmentation.adapters.online_retail import Invoice
from relance_segmentation.domain.rfm import RfmValues, recency_days, score_all
from relance_segmentation.domain.segments import segment_of
from relance_segmentation.errors import SegmentationError

CSV_COLUMNS = ("customer_id", "recency_days", "frequency", "monetary", "r", "f", "m", "segment")


@dataclass(frozen=True)
class RfmRow:
    customer_id: str
    recency_days: int
    frequency: int
    monetary: Decimal
    r: int
    f: int
    m: int
    segment: RfmSegment


@dataclass
class _Customer:
    orders: int = 0
    net: Decimal = Decimal(0)
    last_order_at: datetime | None = None


def default_as_of(invoices: Iterable[Invoice]) -> datetime:
    """The last invoice time plus one day."""
    last = max((i.invoiced_at for i in invoices), default=None)
    if last is None:
        raise SegmentationError("no invoice with a customer: cannot pick a default as-of")
    return last + timedelta(days=1)


def customer_values(invoices: Iterable[Invoice], as_of: datetime) -> dict[str, RfmValues]:
    """RFM values of each customer with at least one order; refunds only lower monetary."""
    customers: dict[str, _Customer] = {}
    for inv in invoices:
        c = customers.setdefault(inv.customer_id, _Customer())
        c.net += inv.total  # a refund's total is negative
        if not inv.is_refund:
            c.orders += 1
            if c.last_order_at is None or inv.invoiced_at > c.last_order_at:
                c.last_order_at = inv.invoiced_at
    return {
        key: RfmValues(recency_days(c.last_order_at, as_of), c.orders, c.net)
        for key, c in customers.items()
        if c.orders > 0 and c.last_order_at is not None
    }


def _sort_key(customer_id: str) -> tuple[int, str]:
    return (len(customer_id), customer_id)


def rfm_rows(invoices: Iterable[Invoice], as_of: datetime) -> list[RfmRow]:
    values = customer_values(invoices, as_of)
    scores = score_all(values)
    rows = []
    for key in sorted(values, key=_sort_key):
        v, s = values[key], scores[key]
        rows.append(
            RfmRow(
                key,
                v.recency_days,
                v.frequency,
                v.monetary,
                s.r,
                s.f,
                s.m,
                segment_of(s.r, s.f, s.m),
            )
        )
    return rows


def write_csv(rows: Iterable[RfmRow], out: Path) -> int:
    count = 0
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(
                (
                    row.customer_id,
                    row.recency_days,
                    row.frequency,
                    format(row.monetary, "f"),
                    row.r,
                    row.f,
                    row.m,
                    row.segment,
                )
            )
            count += 1
    return count
