"""The PostgreSQL repository against the pure domain, on generated data and on the real file."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from relance_events.event import Event, new_event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactIdentified,
    ContactTraits,
    LifecycleStageChanged,
    LineItem,
    LoyaltyTierChanged,
    MessageSent,
    OrderCompleted,
    OrderRefunded,
    Payload,
    RfmSegmentChanged,
)
from relance_segmentation.adapters.online_retail import LoadReport, read_invoices
from relance_segmentation.adapters.postgres import SegmentationRepository
from relance_segmentation.domain.lifecycle import (
    Cutoffs,
    LifecycleConfig,
    lifecycle_stage,
    loyalty_tier,
)
from relance_segmentation.domain.rfm import RfmValues, boundaries, recency_days, score_all
from relance_segmentation.domain.segments import segment_of
from relance_segmentation.ports import OrderLine, RefundLine, SegmentChange
from relance_segmentation.rfm_file import default_as_of, rfm_rows

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
CONFIG = LifecycleConfig()


def generated_ledger(seed: int, contacts: int) -> tuple[list[OrderLine], list[RefundLine]]:
    rnd = random.Random(seed)
    orders: list[OrderLine] = []
    refunds: list[RefundLine] = []
    for c in range(contacts):
        for o in range(rnd.choice([1, 1, 1, 2, 3, 5, 8, 12])):
            # whole days and coarse amounts so ties are frequent
            at = NOW - timedelta(days=rnd.randrange(0, 500), hours=rnd.choice([0, 3]))
            total = Decimal(rnd.choice([10, 25, 40, 99, 250, 1200])) + Decimal("0.50")
            orders.append(OrderLine(f"o{c}-{o}", f"c{c}", at, total))
        if rnd.random() < 0.2:
            refunds.append(RefundLine(f"r{c}", f"c{c}", NOW - timedelta(days=1), Decimal(10)))
    return orders, refunds


def domain_view(orders: list[OrderLine], refunds: list[RefundLine]) -> dict[str, RfmValues]:
    last: dict[str, datetime] = {}
    count: dict[str, int] = {}
    net: dict[str, Decimal] = {}
    for o in orders:
        last[o.contact_key] = max(last.get(o.contact_key, o.ordered_at), o.ordered_at)
        count[o.contact_key] = count.get(o.contact_key, 0) + 1
        net[o.contact_key] = net.get(o.contact_key, Decimal(0)) + o.total
    for r in refunds:
        net[r.contact_key] = net.get(r.contact_key, Decimal(0)) - r.amount
    return {k: RfmValues(recency_days(last[k], NOW), count[k], net[k]) for k in last}


async def test_sql_scores_stage_and_tier_equal_the_domain(conn: asyncpg.Connection) -> None:
    repo = SegmentationRepository(CONFIG, basket_window_days=30)
    orders, refunds = generated_ledger(seed=7, contacts=600)
    async with conn.transaction():
        imported = await repo.import_orders(conn, "s1", orders, refunds, NOW)
        result = await repo.recompute(conn, "s1", NOW)
    assert imported.orders_inserted == len(orders)
    assert imported.refunds_inserted == len(refunds)
    values = domain_view(orders, refunds)
    expected = score_all(values)
    got = await repo.scored_contacts(conn, "s1", NOW)
    assert set(got) == set(values)
    cutoffs = Cutoffs.at(NOW, CONFIG)
    expected_changes = 0
    for key, v in values.items():
        g, s = got[key], expected[key]
        assert (g.recency_days, g.frequency, g.monetary) == (
            v.recency_days,
            v.frequency,
            v.monetary,
        )
        assert (g.r, g.f, g.m) == (s.r, s.f, s.m), key
        assert g.segment == segment_of(s.r, s.f, s.m)
        view = await repo.contact(conn, "s1", key)
        assert view is not None
        assert view.profile is not None
        last = view.aggregate.last_order_at
        assert view.profile.stage == lifecycle_stage(
            orders_count=v.frequency,
            last_order_at=last,
            m_score=s.m,
            cutoffs=cutoffs,
            config=CONFIG,
        )
        assert view.profile.tier == loyalty_tier(
            orders_count=v.frequency,
            net_monetary=v.monetary,
            last_order_at=last,
            cutoffs=cutoffs,
            config=CONFIG,
        )
        expected_changes += 3
    assert result.customers == len(values)
    assert result.changes_recorded == expected_changes
    window = [o.total for o in orders if NOW - timedelta(days=30) < o.ordered_at <= NOW]
    assert result.average_basket is not None
    assert abs(result.average_basket - sum(window) / len(window)) <= Decimal("0.00005")
    summary = await repo.summary(conn, "s1")
    assert summary.boundaries == boundaries(values)
    assert sum(summary.per_stage.values()) == len(values)
    assert sum(summary.per_segment.values()) == len(values)

    async with conn.transaction():
        again = await repo.recompute(conn, "s1", NOW)
    assert (again.profiles_written, again.changes_recorded) == (0, 0)


async def staged(
    repo: SegmentationRepository, conn: asyncpg.Connection, shop: str, now: datetime
) -> list[SegmentChange]:
    return [c async for chunk in repo.recompute_changes(conn, shop, now) for c in chunk]


async def test_time_alone_moves_contacts_to_lapsing_once(conn: asyncpg.Connection) -> None:
    repo = SegmentationRepository(CONFIG)
    orders = [
        OrderLine("o1", "old", datetime(2024, 1, 10, 9, 30, tzinfo=UTC), Decimal(50)),
        OrderLine("o2", "old", datetime(2023, 12, 1, 9, 30, tzinfo=UTC), Decimal(50)),
        OrderLine("o3", "fresh", datetime(2024, 7, 1, tzinfo=UTC), Decimal(20)),
    ]
    day_before = datetime(2024, 7, 9, 9, 30, tzinfo=UTC)
    async with conn.transaction():
        await repo.import_orders(conn, "s1", orders, [], NOW)
        await repo.recompute(conn, "s1", day_before)
        first = await staged(repo, conn, "s1", day_before)
    assert len(first) == 6  # two contacts: stage, tier, segment each
    that_day = datetime(2024, 7, 10, 9, 30, tzinfo=UTC)
    async with conn.transaction():
        result = await repo.recompute(conn, "s1", that_day)
        pending = await staged(repo, conn, "s1", that_day)
    stages = [c for c in pending if isinstance(c.payload, LifecycleStageChanged)]
    assert [(c.contact_key, c.payload.previous, c.payload.current) for c in stages] == [
        ("old", "loyal", "lapsing")
    ]
    assert result.changes_recorded == len(pending)
    async with conn.transaction():
        await repo.recompute(conn, "s1", that_day + timedelta(hours=1))
        assert await staged(repo, conn, "s1", that_day + timedelta(hours=1)) == []


def ev(payload: Payload, at: datetime, key: str = "u1") -> Event[Payload]:
    return new_event(payload, shop_id="s1", contact_key=key, source="test", occurred_at=at)


async def test_per_event_updates_and_change_log(conn: asyncpg.Connection) -> None:
    repo = SegmentationRepository(CONFIG)
    item = LineItem(product_id="p", price=Decimal(15), quantity=2)
    async with conn.transaction():
        first = await repo.apply_event(
            conn,
            ev(
                ContactIdentified(
                    user_id="u1", traits=ContactTraits(email="u1@x.io", birthday=date(1990, 2, 3))
                ),
                NOW,
            ),
            NOW,
        )
        await repo.apply_event(
            conn,
            ev(
                ConsentChanged(
                    channel="email", purpose="marketing", status="granted", origin="identify"
                ),
                NOW,
            ),
            NOW,
        )
        await repo.apply_event(
            conn,
            ev(
                CartChanged(cart_id="k1", items=[item], total=Decimal(30), change="product_added"),
                NOW,
            ),
            NOW,
        )
        assert (
            await repo.apply_event(conn, ev(MessageSent(message_id="m", channel="email"), NOW), NOW)
            == []
        )
    assert [(type(c.payload), c.payload.current) for c in first] == [
        (LifecycleStageChanged, "prospect")
    ]
    order = ev(OrderCompleted(order_id="A1", total=Decimal(30), cart_id="k1"), NOW)
    async with conn.transaction():
        bought = await repo.apply_event(conn, order, NOW)
        duplicate = await repo.apply_event(
            conn, ev(OrderCompleted(order_id="A1", total=Decimal(30)), NOW), NOW
        )
    assert [type(c.payload) for c in bought] == [LifecycleStageChanged, LoyaltyTierChanged]
    assert duplicate == []
    async with conn.transaction():
        second = await repo.apply_event(
            conn,
            ev(OrderCompleted(order_id="A2", total=Decimal(70)), NOW + timedelta(days=1)),
            NOW + timedelta(days=1),
        )
        refund = ev(OrderRefunded(order_id="A2", amount=Decimal(20)), NOW + timedelta(days=2))
        await repo.apply_event(conn, refund, NOW + timedelta(days=2))
        await repo.apply_event(conn, refund, NOW + timedelta(days=2))  # redelivered
    stage = second[0].payload
    assert isinstance(stage, LifecycleStageChanged)
    assert (stage.previous, stage.current) == ("new_customer", "loyal")

    view = await repo.contact(conn, "s1", "u1")
    assert view is not None
    assert view.profile is not None
    agg = view.aggregate
    assert (agg.orders_count, agg.gross, agg.refunded, agg.net_monetary) == (
        2,
        Decimal(100),
        Decimal(20),
        Decimal(80),
    )
    assert agg.last_order_total == Decimal(70)
    assert agg.open_carts == {}
    assert agg.consent == {"email:marketing": "granted"}
    assert agg.birthday == date(1990, 2, 3)
    assert (view.profile.stage, view.profile.tier, view.profile.segment) == (
        "loyal",
        "recurrence",
        None,
    )

    made = [*first, *bought, *second]
    events = [c.event() for c in made]
    assert len({e.event_id for e in events}) == len(events) == 5
    assert [e.event_id for e in events] == [c.event().event_id for c in made]  # stable ids

    # after a recompute the contact has scores; the next order scores against stored bounds
    async with conn.transaction():
        await repo.recompute(conn, "s1", NOW + timedelta(days=3))
        after = await repo.apply_event(
            conn,
            ev(OrderCompleted(order_id="A3", total=Decimal(5)), NOW + timedelta(days=3)),
            NOW + timedelta(days=3),
        )
    assert [type(c.payload) for c in after] in ([], [RfmSegmentChanged])
    view = await repo.contact(conn, "s1", "u1")
    assert view is not None
    assert view.profile is not None
    assert (view.profile.r, view.profile.f, view.profile.m) == (1, 1, 1)  # alone: all ties
    assert view.aggregate.orders_count == 3


async def test_file_rfm_agrees_with_sql_on_online_retail(
    conn: asyncpg.Connection, online_retail_file: Path
) -> None:
    report = LoadReport()
    invoices = list(read_invoices(online_retail_file, report))
    as_of = default_as_of(invoices)
    from_file = {r.customer_id: r for r in rfm_rows(invoices, as_of)}
    repo = SegmentationRepository(CONFIG)
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
    async with conn.transaction():
        await repo.import_orders(conn, "uci", orders, refunds, as_of)
        result = await repo.recompute(conn, "uci", as_of)
    sql = await repo.scored_contacts(conn, "uci", as_of)
    assert result.customers == len(from_file) == 4339
    assert result.contacts == 4372  # 33 customers only ever cancelled: prospects
    assert set(sql) == set(from_file)
    disagreements = [
        k
        for k, f in from_file.items()
        if (
            sql[k].recency_days,
            sql[k].frequency,
            sql[k].monetary,
            sql[k].r,
            sql[k].f,
            sql[k].m,
            sql[k].segment,
        )
        != (f.recency_days, f.frequency, f.monetary, f.r, f.f, f.m, f.segment)
    ]
    assert disagreements == []


async def test_monetary_ties_longer_than_the_sorted_look_ahead(conn: asyncpg.Connection) -> None:
    """Hundreds of customers spent the same: a boundary lies far past its quintile position."""
    repo = SegmentationRepository(CONFIG)
    spent = [10] * 500 + [20] * 300 + [30] * 200
    orders = [
        OrderLine(f"o{i}", f"c{i}", NOW - timedelta(days=i % 7), Decimal(total))
        for i, total in enumerate(spent)
    ]
    async with conn.transaction():
        await repo.import_orders(conn, "ties", orders, [], NOW)
        await repo.recompute(conn, "ties", NOW)
    values = domain_view(orders, [])
    expected = boundaries(values)
    assert expected.monetary == (Decimal(20), Decimal(20), Decimal(30), Decimal(30))
    assert await repo.boundaries(conn, "ties", NOW) == expected
    scores = score_all(values)
    got = await repo.scored_contacts(conn, "ties", NOW)
    assert {k: (g.r, g.f, g.m) for k, g in got.items()} == {
        k: (s.r, s.f, s.m) for k, s in scores.items()
    }
