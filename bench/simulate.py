"""Backtest benchmark: the UCI Online Retail file through `relance simulate`.

1. Converts `online_retail.csv.gz` (one row per invoice line) to Segment JSONL: one
   `identify` per customer (at their first invoice, with their country) and, per invoice,
   `track` `Order Completed` (order id = invoice number, products, total); a cancelled
   invoice (number starting with `C`) becomes `Order Refunded`. Lines without a customer id
   are anonymous counter sales and are left out.
2. Times `relance_orchestrator.cli.simulate` (the same engine as the service) over the
   whole file, and writes the figures to bench/results/simulate.json.

    uv run --frozen python bench/simulate.py [--csv PATH] [--work DIR] [--limit N]

Goal: the whole file in under 60 s.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

from relance_orchestrator.cli import simulate

ROOT = Path(__file__).resolve().parent
# The shared datasets sit beside the repository (`../shared/data`), or under /work/shared.
DATA = next(
    (
        root / "online_retail/online_retail.csv.gz"
        for root in (Path(__file__).resolve().parents[2] / "shared/data", Path("/work/shared/data"))
        if (root / "online_retail/online_retail.csv.gz").exists()
    ),
    Path("/work/shared/data/online_retail/online_retail.csv.gz"),
)
UNTIL = datetime(2012, 1, 1, tzinfo=UTC)
MAX_PRODUCTS = 500


def _ts(raw: str) -> str:
    return raw.replace(" ", "T") + "Z"


def convert(csv_gz: Path, out: Path, *, limit: int | None = None) -> dict[str, int]:
    """Write Segment JSONL ordered by time (ties: file order); returns counts."""
    invoices: dict[str, dict[str, object]] = {}
    lines: dict[str, list[dict[str, object]]] = defaultdict(list)
    first_seen: dict[str, tuple[str, str]] = {}
    rows = 0
    with gzip.open(csv_gz, "rt", encoding="utf-8", newline="") as raw:
        for row in csv.DictReader(raw):
            rows += 1
            if limit is not None and rows > limit:
                break
            customer = row["CustomerID"].strip()
            if not customer:
                continue
            invoice = row["InvoiceNo"].strip()
            when = _ts(row["InvoiceDate"].strip())
            if invoice not in invoices:
                invoices[invoice] = {"customer": customer, "at": when}
            first_seen.setdefault(customer, (when, row["Country"].strip()))
            quantity = int(row["Quantity"])
            price = Decimal(row["UnitPrice"])
            lines[invoice].append(
                {
                    "product_id": row["StockCode"].strip() or "unknown",
                    "name": row["Description"].strip()[:256] or None,
                    "price": str(price),
                    "quantity": abs(quantity),
                }
            )
    messages: list[tuple[str, int, bytes]] = []
    seq = 0
    for customer, (when, country) in first_seen.items():
        traits: dict[str, object] = {"createdAt": when}
        code = _country_code(country)
        if code is not None:
            traits["country"] = code
        message = {
            "type": "identify",
            "messageId": f"identify-{customer}",
            "userId": customer,
            "timestamp": when,
            "traits": traits,
        }
        messages.append((when, seq, orjson.dumps(message)))
        seq += 1
    refunds = orders = 0
    for invoice, head in invoices.items():
        items = lines[invoice]
        total = sum((Decimal(str(i["price"])) * int(str(i["quantity"])) for i in items), Decimal(0))
        cancelled = invoice.startswith("C")
        props: dict[str, object] = {"order_id": invoice, "currency": "GBP"}
        if cancelled:
            props["amount"] = str(total)
            refunds += 1
        else:
            props["total"] = str(total)
            # the Segment spec caps an order at 500 products; the total keeps every line
            props["products"] = [
                {k: v for k, v in i.items() if v is not None} for i in items[:MAX_PRODUCTS]
            ]
            orders += 1
        message = {
            "type": "track",
            "messageId": f"invoice-{invoice}",
            "userId": head["customer"],
            "event": "Order Refunded" if cancelled else "Order Completed",
            "timestamp": head["at"],
            "properties": props,
        }
        messages.append((str(head["at"]), seq, orjson.dumps(message)))
        seq += 1
    messages.sort(key=lambda m: (m[0], m[1]))
    with out.open("wb") as sink:
        for _, _, body in messages:
            sink.write(body + b"\n")
    return {
        "csv_rows": rows if limit is None else min(rows, limit),
        "customers": len(first_seen),
        "orders": orders,
        "refunds": refunds,
        "segment_messages": len(messages),
    }


_COUNTRIES = {
    "United Kingdom": "GB",
    "France": "FR",
    "Germany": "DE",
    "EIRE": "IE",
    "Spain": "ES",
    "Netherlands": "NL",
    "Belgium": "BE",
    "Switzerland": "CH",
    "Portugal": "PT",
    "Australia": "AU",
    "Norway": "NO",
    "Italy": "IT",
    "Channel Islands": "JE",
    "Finland": "FI",
    "Cyprus": "CY",
    "Sweden": "SE",
    "Austria": "AT",
    "Denmark": "DK",
    "Japan": "JP",
    "Poland": "PL",
    "USA": "US",
    "Israel": "IL",
    "Singapore": "SG",
    "Iceland": "IS",
    "Canada": "CA",
    "Greece": "GR",
    "Malta": "MT",
    "United Arab Emirates": "AE",
    "Lithuania": "LT",
    "Czech Republic": "CZ",
    "Lebanon": "LB",
    "Brazil": "BR",
    "Bahrain": "BH",
    "Saudi Arabia": "SA",
    "RSA": "ZA",
}


def _country_code(name: str) -> str | None:
    return _COUNTRIES.get(name)


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        yield from handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=DATA)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "relance-bench-simulate"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N CSV rows")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    events = args.work / "online_retail.segment.jsonl"
    sends = args.work / "sends.jsonl"
    load_before = os.getloadavg()[0]

    t0 = time.perf_counter()
    counts = convert(args.csv, events, limit=args.limit)
    convert_s = time.perf_counter() - t0

    summary = io.StringIO()
    t1, cpu1 = time.perf_counter(), time.process_time()
    simulate(events, UNTIL, sends, progress=False, console_file=summary)
    simulate_s = time.perf_counter() - t1
    simulate_cpu_s = time.process_time() - cpu1
    send_lines = sum(1 for _ in _lines(sends))
    print(summary.getvalue())

    result: dict[str, object] = {
        **counts,
        "until": UNTIL.isoformat(),
        "convert_s": round(convert_s, 2),
        "simulate_s": round(simulate_s, 2),
        "simulate_cpu_s": round(simulate_cpu_s, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "events_per_s": round(counts["segment_messages"] / simulate_s, 1),
        "sends": send_lines,
        "summary": summary.getvalue().splitlines(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_before": round(load_before, 2),
            "note": "one process (the backtest uses one core); nothing else measured beside it",
        },
        "goal_s": 60,
        "goal_met": simulate_s < 60,
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    out = ROOT / "results" / "simulate.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
