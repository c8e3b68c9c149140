"""Real data: the file-based RFM against an independent pandas computation, every customer."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from relance_segmentation.adapters.online_retail import LoadReport, read_invoices
from relance_segmentation.cli import rfm
from relance_segmentation.domain.segments import segment_of

AS_OF = datetime(2011, 12, 10, 12, 50, tzinfo=UTC)


@pytest.fixture(scope="module")
def rfm_csv(
    tmp_path_factory: pytest.TempPathFactory, online_retail_file: Path
) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("rfm") / "rfm.csv"
    rfm(online_retail_file, "online-retail", None, out, progress=False)
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def expected(online_retail_file: Path) -> pd.DataFrame:
    df = pd.read_csv(
        online_retail_file, dtype={"InvoiceNo": str, "StockCode": str}, parse_dates=["InvoiceDate"]
    )
    df = df[df["CustomerID"].notna()].copy()
    df["customer"] = df["CustomerID"].astype("int64").astype(str)
    df["amount"] = df["Quantity"] * df["UnitPrice"]
    is_order = ~df["InvoiceNo"].str.startswith("C")
    orders = (
        df[is_order]
        .groupby("customer")
        .agg(frequency=("InvoiceNo", "nunique"), last=("InvoiceDate", "max"))
    )
    net = df.groupby("customer")["amount"].sum()
    orders["monetary"] = net.reindex(orders.index)
    as_of = pd.Timestamp("2011-12-10 12:50:00")
    orders["recency_days"] = (as_of - orders["last"]).dt.days
    return orders


def test_header_and_default_as_of(rfm_csv: list[dict[str, str]]) -> None:
    assert list(rfm_csv[0]) == [
        "customer_id",
        "recency_days",
        "frequency",
        "monetary",
        "r",
        "f",
        "m",
        "segment",
    ]
    # the last invoice is 2011-12-09 12:50, so as-of is 2011-12-10 12:50: its buyers are 1 day old
    assert min(int(r["recency_days"]) for r in rfm_csv) == 1


def test_every_customer_matches_pandas(
    rfm_csv: list[dict[str, str]], expected: pd.DataFrame
) -> None:
    got = {r["customer_id"]: r for r in rfm_csv}
    assert set(got) == set(expected.index)
    mismatches = []
    for customer, row in expected.iterrows():
        mine = got[str(customer)]
        if (
            int(mine["recency_days"]) != row["recency_days"]
            or int(mine["frequency"]) != row["frequency"]
            or abs(float(mine["monetary"]) - row["monetary"]) > 1e-6
        ):
            mismatches.append((customer, mine, row.to_dict()))
    assert mismatches == []


def test_totals(rfm_csv: list[dict[str, str]]) -> None:
    assert len(rfm_csv) == 4339
    net = sum(Decimal(r["monetary"]) for r in rfm_csv)
    assert net == Decimal("8310477.054")
    assert sum(int(r["frequency"]) for r in rfm_csv) == 18536
    twelve_three_four_six = next(r for r in rfm_csv if r["customer_id"] == "12346")
    assert Decimal(twelve_three_four_six["monetary"]) == 0  # 74,215 units bought, all cancelled


def test_scores_are_consistent(rfm_csv: list[dict[str, str]]) -> None:
    for dim, better_is_higher in (("recency_days", False), ("frequency", True), ("monetary", True)):
        score = dim[0]
        by_value: dict[Decimal, set[str]] = {}
        for r in rfm_csv:
            by_value.setdefault(Decimal(r[dim]), set()).add(r[score])
        assert all(len(s) == 1 for s in by_value.values()), f"ties split in {dim}"
        ordered = sorted(by_value, reverse=not better_is_higher)
        scores = [int(next(iter(by_value[v]))) for v in ordered]
        assert scores == sorted(scores)
    assert all(r["segment"] == segment_of(int(r["r"]), int(r["f"]), int(r["m"])) for r in rfm_csv)
    assert {r["r"] for r in rfm_csv} == {"1", "2", "3", "4", "5"}


def test_load_report_counts_skipped_lines(online_retail_file: Path) -> None:
    report = LoadReport()
    invoices = list(read_invoices(online_retail_file, report))
    assert report.lines_read == 541_909
    assert report.lines_without_customer == 135_080
    assert report.lines_with_other_customer == 0
    assert len(report.customers) == 4372
    assert (report.orders, report.refunds) == (18_536, 3_654)
    assert len(invoices) == 22_190
    assert report.last_at == datetime(2011, 12, 9, 12, 50, tzinfo=UTC)
    assert AS_OF - report.last_at == pd.Timedelta(days=1)
