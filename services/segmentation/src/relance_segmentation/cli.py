"""`relance rfm` (RFM straight from an orders file) and `relance import orders` (load an
orders file into the service's database, then recompute)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from relance_runtime.bus.messages import TopicNames, to_message
from relance_runtime.bus.postgres import PostgresLogBus
from relance_runtime.clock import SystemClock
from relance_runtime.db import create_pool, migrate
from relance_runtime.outbox import Outbox, TableOutbox
from relance_runtime.platform import LogOutbox, resolve_dsn
from relance_runtime.settings import CommonSettings
from relance_segmentation.adapters.online_retail import Invoice, LoadReport, read_invoices
from relance_segmentation.adapters.postgres import SegmentationRepository
from relance_segmentation.errors import SegmentationError
from relance_segmentation.ports import ImportResult, OrderLine, RecomputeResult, RefundLine
from relance_segmentation.rfm_file import default_as_of, rfm_rows, write_csv
from relance_segmentation.services import SegmentationService
from relance_segmentation.settings import SegmentationSettings

FORMATS = ("online-retail",)


def load_online_retail(
    orders: Path, progress: bool = True, console: Console | None = None
) -> tuple[list[Invoice], LoadReport]:
    """Read an Online Retail file, with a progress bar when asked."""
    report = LoadReport()
    if not progress:
        return list(read_invoices(orders, report)), report
    with Progress(
        TextColumn("[bold]reading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(orders.name, total=orders.stat().st_size)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        invoices = list(read_invoices(orders, report, advance))
    return invoices, report


def rfm(
    orders: Path,
    fmt: str = "online-retail",
    as_of: datetime | None = None,
    out: Path = Path("rfm.csv"),
    progress: bool = True,
) -> None:
    """Compute RFM from an orders file and write one CSV row per customer with an order."""
    if fmt not in FORMATS:
        raise SegmentationError(f"unknown orders format {fmt!r}; known: {', '.join(FORMATS)}")
    console = Console(stderr=True)
    invoices, report = load_online_retail(orders, progress=progress, console=console)
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    when = as_of if as_of is not None else default_as_of(invoices)
    rows = rfm_rows(invoices, when)
    written = write_csv(rows, out)

    summary = Table(title=f"RFM as of {when.isoformat()}", show_header=False)
    summary.add_row("lines read", f"{report.lines_read:,}")
    summary.add_row("lines skipped (no customer)", f"{report.lines_without_customer:,}")
    summary.add_row("lines skipped (other customer)", f"{report.lines_with_other_customer:,}")
    summary.add_row("orders / refunds", f"{report.orders:,} / {report.refunds:,}")
    summary.add_row("net revenue", f"{report.net_amount:,.2f}")
    summary.add_row("customers with an order", f"{written:,}")
    summary.add_row("written to", str(out))
    console.print(summary)
    by_segment = Counter(r.segment for r in rows)
    segments = Table(title="customers per RFM segment")
    segments.add_column("segment")
    segments.add_column("customers", justify="right")
    for name, count in by_segment.most_common():
        segments.add_row(name, f"{count:,}")
    console.print(segments)


@dataclass(frozen=True)
class ImportReport:
    """What `import_orders` read, loaded and skipped, and the recompute that followed."""

    path: Path
    shop_id: str
    lines_read: int
    lines_without_customer: int
    lines_with_other_customer: int
    orders_read: int
    refunds_read: int
    orders_loaded: int
    refunds_loaded: int
    customers: int
    contacts_updated: int
    net_amount: Decimal
    as_of: datetime
    recompute: RecomputeResult

    @property
    def lines_skipped(self) -> int:
        return self.lines_without_customer + self.lines_with_other_customer

    @property
    def orders_already_known(self) -> int:
        return self.orders_read - self.orders_loaded

    @property
    def refunds_already_known(self) -> int:
        return self.refunds_read - self.refunds_loaded


def _outbox(
    common: CommonSettings, pool: asyncpg.Pool, dsn: str
) -> tuple[Outbox, PostgresLogBus | None]:
    names = TopicNames(common.topic_prefix)
    if common.bus == "kafka":
        # Staged in runtime_outbox: a running service's relay publishes them.
        return TableOutbox(lambda event: to_message(event, names)), None
    bus = PostgresLogBus(pool, dsn, names=names)
    return LogOutbox(bus), bus


async def _load_and_recompute(
    invoices: list[Invoice], shop_id: str, dsn: str, common: CommonSettings, console: Console
) -> tuple[ImportResult, RecomputeResult, datetime]:
    settings = SegmentationSettings()
    repo = SegmentationRepository(settings.lifecycle(), settings.basket_window_days)
    clock = SystemClock(common.clock_offset_file)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        outbox, bus = _outbox(common, pool, dsn)
        if bus is not None:
            await bus.start()
        orders = [
            OrderLine(i.invoice_no, i.customer_id, i.invoiced_at, i.total)
            for i in invoices
            if not i.is_refund
        ]
        refunds = [
            RefundLine(i.invoice_no, i.customer_id, i.invoiced_at, i.refund_amount)
            for i in invoices
            if i.is_refund
        ]
        now = clock.now()
        with console.status(f"loading {len(orders):,} orders and {len(refunds):,} refunds"):
            async with pool.acquire() as conn, conn.transaction():
                loaded = await repo.import_orders(conn, shop_id, orders, refunds, now)
        service = SegmentationService(
            repo,
            pool,
            outbox,
            clock,
            recompute_interval=timedelta(seconds=settings.recompute_interval_s),
        )
        with console.status(f"recomputing shop {shop_id!r} as of {now.isoformat()}"):
            result = await service.recompute_shop(shop_id, now, force=True)
        assert result is not None  # forced: never skipped
        return loaded, result, now
    finally:
        await pool.close()


def import_orders(
    path: Path,
    fmt: str = "online-retail",
    shop_id: str = "default",
    progress: bool = True,
    database_url: str | None = None,
) -> ImportReport:
    """Load an orders file into the segmentation database (known order ids are skipped),
    then recompute the shop; its stage, tier and segment changes go out as events."""
    if fmt not in FORMATS:
        raise SegmentationError(f"unknown orders format {fmt!r}; known: {', '.join(FORMATS)}")
    console = Console(stderr=True)
    invoices, read = load_online_retail(path, progress=progress, console=console)
    common = CommonSettings()
    dsn = database_url or resolve_dsn(common)
    loaded, result, now = asyncio.run(_load_and_recompute(invoices, shop_id, dsn, common, console))
    report = ImportReport(
        path=path,
        shop_id=shop_id,
        lines_read=read.lines_read,
        lines_without_customer=read.lines_without_customer,
        lines_with_other_customer=read.lines_with_other_customer,
        orders_read=read.orders,
        refunds_read=read.refunds,
        orders_loaded=loaded.orders_inserted,
        refunds_loaded=loaded.refunds_inserted,
        customers=len(read.customers),
        contacts_updated=loaded.contacts_updated,
        net_amount=read.net_amount,
        as_of=now,
        recompute=result,
    )
    table = Table(title=f"import of {path.name} into shop {shop_id!r}", show_header=False)
    table.add_row("lines read", f"{report.lines_read:,}")
    table.add_row("lines skipped (no customer)", f"{report.lines_without_customer:,}")
    table.add_row("lines skipped (other customer)", f"{report.lines_with_other_customer:,}")
    table.add_row(
        "orders loaded / already known",
        f"{report.orders_loaded:,} / {report.orders_already_known:,}",
    )
    table.add_row(
        "refunds loaded / already known",
        f"{report.refunds_loaded:,} / {report.refunds_already_known:,}",
    )
    table.add_row(
        "customers in file / contacts updated",
        f"{report.customers:,} / {report.contacts_updated:,}",
    )
    table.add_row("net revenue in file", f"{report.net_amount:,.2f}")
    table.add_row("recomputed as of", now.isoformat())
    table.add_row("contacts / with an order", f"{result.contacts:,} / {result.customers:,}")
    table.add_row(
        "profiles written / change events",
        f"{result.profiles_written:,} / {result.changes_recorded:,}",
    )
    if result.average_basket is not None:
        table.add_row("average basket", f"{result.average_basket:,.2f}")
    console.print(table)
    return report
