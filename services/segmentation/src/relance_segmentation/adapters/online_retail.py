"""Streaming reader of the UCI Online Retail layout (gzip or plain CSV).

Each invoice is an order of its customer; invoices starting with `C` are refunds (their
amount is minus the sum of their lines). Lines without a customer are skipped and
counted. Times are naive UK wall-clock time in the file and are read as UTC.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO

from relance_segmentation.errors import OrderFileError

_ALIASES: dict[str, tuple[str, ...]] = {
    "invoice": ("InvoiceNo", "Invoice"),
    "quantity": ("Quantity",),
    "invoice_date": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
    "country": ("Country",),
}

Progress = Callable[[int, int], None]
"""Called with (bytes read so far, total bytes of the file)."""


@dataclass(frozen=True)
class Invoice:
    """One invoice of one customer: an order, or a refund when `is_refund`."""

    invoice_no: str
    customer_id: str
    invoiced_at: datetime
    total: Decimal
    lines: int
    country: str

    @property
    def is_refund(self) -> bool:
        return self.invoice_no.startswith("C")

    @property
    def refund_amount(self) -> Decimal:
        return -self.total


@dataclass
class LoadReport:
    lines_read: int = 0
    lines_without_customer: int = 0
    lines_with_other_customer: int = 0
    orders: int = 0
    refunds: int = 0
    customers: set[str] = field(default_factory=set)
    order_amount: Decimal = Decimal(0)
    refund_amount: Decimal = Decimal(0)
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def lines_skipped(self) -> int:
        return self.lines_without_customer + self.lines_with_other_customer

    @property
    def net_amount(self) -> Decimal:
        return self.order_amount - self.refund_amount


@dataclass
class _Open:
    customer_id: str
    invoiced_at: datetime
    total: Decimal
    lines: int
    country: str


def _columns(header: list[str], path: Path) -> dict[str, int]:
    index: dict[str, int] = {}
    for key, names in _ALIASES.items():
        found = [header.index(n) for n in names if n in header]
        if not found:
            raise OrderFileError(f"{path}: no column {' or '.join(names)} in header {header}")
        index[key] = found[0]
    return index


def _customer(raw: str) -> str:
    raw = raw.strip()
    # pandas-written copies may carry "12346.0"
    return raw[:-2] if raw.endswith(".0") else raw


def _open_text(raw: BinaryIO, path: Path) -> io.TextIOWrapper:
    magic = raw.read(2)
    raw.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw  # type: ignore[assignment]
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def read_invoices(
    path: Path, report: LoadReport, progress: Progress | None = None
) -> Iterator[Invoice]:
    """Invoices in order of first appearance, after the whole file is read.

    Lines are read one at a time; only one small record per invoice is kept, since an
    invoice's lines are not always contiguous in the file.
    """
    invoices: dict[str, _Open] = {}
    total_bytes = path.stat().st_size
    with path.open("rb") as raw:
        text = _open_text(raw, path)
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            raise OrderFileError(f"{path}: empty file") from None
        col = _columns(header, path)
        for n, row in enumerate(reader, start=2):
            report.lines_read += 1
            if progress is not None and n % 20_000 == 0:
                progress(raw.tell(), total_bytes)
            customer = _customer(row[col["customer"]])
            if not customer:
                report.lines_without_customer += 1
                continue
            try:
                invoice_no = row[col["invoice"]].strip()
                at = datetime.fromisoformat(row[col["invoice_date"]]).replace(tzinfo=UTC)
                amount = int(row[col["quantity"]]) * Decimal(row[col["price"]])
            except (ValueError, InvalidOperation, IndexError) as exc:
                raise OrderFileError(f"{path}:{n}: unreadable line: {exc}") from exc
            current = invoices.get(invoice_no)
            if current is None:
                invoices[invoice_no] = _Open(customer, at, amount, 1, row[col["country"]])
            elif current.customer_id != customer:
                report.lines_with_other_customer += 1
            else:
                current.total += amount
                current.lines += 1
                current.invoiced_at = min(current.invoiced_at, at)
        if progress is not None:
            progress(total_bytes, total_bytes)
    for invoice_no, o in invoices.items():
        invoice = Invoice(invoice_no, o.customer_id, o.invoiced_at, o.total, o.lines, o.country)
        report.customers.add(invoice.customer_id)
        report.first_at = (
            o.invoiced_at if report.first_at is None else min(report.first_at, o.invoiced_at)
        )
        report.last_at = (
            o.invoiced_at if report.last_at is None else max(report.last_at, o.invoiced_at)
        )
        if invoice.is_refund:
            report.refunds += 1
            report.refund_amount += invoice.refund_amount
        else:
            report.orders += 1
            report.order_amount += invoice.total
        yield invoice
