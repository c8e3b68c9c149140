"""`import_orders` on a slice of the real UCI file, into a real database."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import asyncpg
import pandas as pd
import pytest

from relance_events import decode
from relance_segmentation.cli import import_orders

LINES = 20_000


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory, online_retail_file: Path) -> Path:
    out = tmp_path_factory.mktemp("slice") / "slice.csv"
    with (
        gzip.open(online_retail_file, "rt", encoding="utf-8", newline="") as src,
        out.open("w", encoding="utf-8", newline="") as dst,
    ):
        for n, line in enumerate(src):
            if n > LINES:
                break
            dst.write(line)
    return out


async def _read(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def test_import_orders_loads_counts_and_recomputes(
    sliced: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELANCE_BUS", "postgres")
    monkeypatch.setenv("RELANCE_TOPIC_PREFIX", "imp.")
    report = import_orders(sliced, shop_id="uci", progress=False, database_url=database_url)

    df = pd.read_csv(sliced, dtype={"InvoiceNo": str, "StockCode": str})
    known = df[df["CustomerID"].notna()].copy()
    known["customer"] = known["CustomerID"].astype("int64").astype(str)
    known["amount"] = known["Quantity"] * known["UnitPrice"]
    is_refund = known["InvoiceNo"].str.startswith("C")
    assert report.lines_read == LINES
    assert report.lines_without_customer == int(df["CustomerID"].isna().sum()) > 0
    assert report.orders_read == report.orders_loaded == known[~is_refund]["InvoiceNo"].nunique()
    assert report.refunds_read == report.refunds_loaded == known[is_refund]["InvoiceNo"].nunique()
    assert report.customers == report.contacts_updated == known["customer"].nunique()

    rows = asyncio.run(
        _read(
            database_url,
            "select c.contact_key, c.orders_count, c.gross - c.refunded as net, p.stage,"
            " p.segment from segmentation_contacts c"
            " left join segmentation_profiles p on p.contact_id = c.id where c.shop_id = 'uci'",
        )
    )
    got = {r["contact_key"]: r for r in rows}
    frequency = known[~is_refund].groupby("customer")["InvoiceNo"].nunique()
    net = known.groupby("customer")["amount"].sum()
    assert set(got) == set(net.index)
    for customer, total in net.items():
        row = got[str(customer)]
        assert row["orders_count"] == frequency.get(customer, 0)
        assert abs(float(row["net"]) - total) < 1e-6
    # recomputed as of today: December 2010 buyers are long gone
    assert {r["stage"] for r in rows} <= {"ex_customer", "prospect"}
    buyers = [r for r in rows if r["orders_count"] > 0]
    assert report.recompute.customers == len(buyers)
    assert all(r["segment"] is not None for r in buyers)

    published = asyncio.run(
        _read(database_url, "select value from bus_log where topic = 'imp.relance.segments.v1'")
    )
    assert len(published) == report.recompute.changes_recorded > 0
    assert {decode(r["value"]).shop_id for r in published} == {"uci"}

    again = import_orders(sliced, shop_id="uci", progress=True, database_url=database_url)
    assert (again.orders_loaded, again.refunds_loaded) == (0, 0)
    assert again.orders_already_known == report.orders_read
    assert again.recompute.changes_recorded == 0
    assert abs(float(report.net_amount) - float(net.sum())) < 1e-6
