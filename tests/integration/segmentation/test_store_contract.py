"""The SegmentationStore contract, run against PostgreSQL and the in-memory store alike."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import pytest

from relance_events.event import Event, new_event
from relance_events.payloads import (
    CartChanged,
    ConsentChanged,
    ContactAliased,
    ContactIdentified,
    ContactTraits,
    EmailOpened,
    LifecycleStageChanged,
    LineItem,
    LoyaltyTierChanged,
    MessageSent,
    OrderCompleted,
    OrderRefunded,
    Payload,
    RfmSegmentChanged,
)
from relance_runtime.db import Connection
from relance_segmentation.adapters.memory import MEMORY_CONNECTION, MemorySegmentationStore
from relance_segmentation.adapters.postgres import SegmentationRepository
from relance_segmentation.domain.aggregates import profile_of
from relance_segmentation.domain.lifecycle import LifecycleConfig
from relance_segmentation.domain.rfm import RfmValues, boundaries, score_values
from relance_segmentation.ports import (
    OrderLine,
    RecomputeResult,
    RefundLine,
    SegmentationStore,
    SegmentChange,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SHOP = "s1"
CONFIG = LifecycleConfig()
WINDOW_DAYS = 30


class AfterDiff:
    """A connection that runs `hook` right after the recompute staged its diff."""

    def __init__(self, conn: Connection, hook: Callable[[], Awaitable[None]]) -> None:
        self._conn = conn
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        status: str = await self._conn.execute(query, *args, **kwargs)
        if "create temp table seg_recompute_diff" in query:
            await self._hook()
        return status


@dataclass
class Impl:
    store: SegmentationStore
    conn: Connection
    other: Connection  # another transaction's connection

    async def recompute(
        self, now: datetime, shop: str = SHOP, batch: int = 5000
    ) -> tuple[RecomputeResult, list[list[SegmentChange]]]:
        async with self.conn.transaction():
            result = await self.store.recompute(self.conn, shop, now)
            chunks = [c async for c in self.store.recompute_changes(self.conn, shop, now, batch)]
        return result, chunks

    async def recompute_racing(
        self, now: datetime, hook: Callable[[], Awaitable[None]]
    ) -> tuple[RecomputeResult, list[SegmentChange]]:
        """A recompute whose diff is followed, before its writes, by `hook`."""
        conn = self.conn
        if isinstance(self.store, MemorySegmentationStore):
            self.store.after_diff = hook
        else:
            conn = AfterDiff(self.conn, hook)  # type: ignore[assignment]
        try:
            async with self.conn.transaction():
                result = await self.store.recompute(conn, SHOP, now)
                staged = await changes_of(self, now)
        finally:
            if isinstance(self.store, MemorySegmentationStore):
                self.store.after_diff = None
        return result, staged

    async def apply(self, event: Event[Payload], now: datetime) -> list[SegmentChange]:
        async with self.conn.transaction():
            return await self.store.apply_event(self.conn, event, now)

    async def load(
        self, orders: Sequence[OrderLine], refunds: Sequence[RefundLine] = (), shop: str = SHOP
    ) -> tuple[int, int, int]:
        async with self.conn.transaction():
            r = await self.store.import_orders(self.conn, shop, orders, refunds, NOW)
        return r.orders_inserted, r.refunds_inserted, r.contacts_updated


async def changes_of(impl: Impl, now: datetime, shop: str = SHOP) -> list[SegmentChange]:
    return [c async for chunk in impl.store.recompute_changes(impl.conn, shop, now) for c in chunk]


@pytest.fixture
def pool_if_needed(request: pytest.FixtureRequest) -> asyncpg.Pool | None:
    if request.param == "memory":
        return None
    pool: asyncpg.Pool = request.getfixturevalue("pool")
    return pool


@pytest.fixture
async def impl(pool_if_needed: asyncpg.Pool | None) -> AsyncIterator[Impl]:
    if pool_if_needed is None:
        store = MemorySegmentationStore(CONFIG, basket_window_days=WINDOW_DAYS)
        yield Impl(store, MEMORY_CONNECTION, MEMORY_CONNECTION)
        return
    repo = SegmentationRepository(CONFIG, basket_window_days=WINDOW_DAYS)
    async with pool_if_needed.acquire() as conn, pool_if_needed.acquire() as other:
        yield Impl(repo, conn, other)


pytestmark = pytest.mark.parametrize(
    "pool_if_needed", ["postgres", "memory"], indirect=True, ids=["postgres", "memory"]
)


def ev(payload: Payload, at: datetime = NOW, key: str = "u1", shop: str = SHOP) -> Event[Payload]:
    return new_event(payload, shop_id=shop, contact_key=key, source="test", occurred_at=at)


def order(order_id: str, total: int, at: datetime, key: str = "u1") -> Event[Payload]:
    return ev(OrderCompleted(order_id=order_id, total=Decimal(total)), at, key)


def kinds(found: list[SegmentChange]) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    for c in found:
        p = c.payload
        out.append((type(p).__name__, p.previous, p.current))
    return out


# --- apply_event -------------------------------------------------------------------------


async def test_events_fold_into_aggregates_and_report_each_change_once(impl: Impl) -> None:
    assert await impl.apply(ev(MessageSent(message_id="m", channel="email")), NOW) == []
    assert await impl.store.contact(impl.conn, SHOP, "u1") is None

    traits = ContactTraits(email="u1@x.io", birthday=date(1990, 2, 3), custom={"vip": True})
    identify = ev(ContactIdentified(user_id="u1", traits=traits))
    found = await impl.apply(identify, NOW)
    assert kinds(found) == [("LifecycleStageChanged", None, "prospect")]
    assert found[0].cause == f"event:{identify.event_id}"
    assert found[0].event().shop_id == SHOP

    consent = ConsentChanged(
        channel="email", purpose="marketing", status="granted", origin="identify"
    )
    assert await impl.apply(ev(consent), NOW) == []
    item = LineItem(product_id="p", price=Decimal(15), quantity=2)
    cart = CartChanged(cart_id="k1", items=[item], total=Decimal(30), change="product_added")
    await impl.apply(ev(cart, NOW - timedelta(hours=1)), NOW)
    view = await impl.store.contact(impl.conn, SHOP, "u1")
    assert view is not None
    assert list(view.aggregate.open_carts) == ["k1"]
    assert view.aggregate.open_carts["k1"].items == 2

    at = NOW + timedelta(hours=1)
    bought = ev(OrderCompleted(order_id="o1", total=Decimal("80.50"), cart_id="k1"), at)
    found = await impl.apply(bought, at)
    assert kinds(found) == [
        ("LifecycleStageChanged", "prospect", "new_customer"),
        ("LoyaltyTierChanged", None, "discovery"),
    ]
    assert await impl.apply(order("o1", 99, at), at) == []  # a known order id
    refund = ev(OrderRefunded(order_id="o1", amount=Decimal(30)), at)
    assert await impl.apply(refund, at) == []
    assert await impl.apply(refund, at) == []  # the same refund event again
    await impl.apply(ev(EmailOpened(message_id="m1"), at), at)
    await impl.apply(ev(EmailOpened(message_id="m0"), NOW), at)  # older: kept the later

    view = await impl.store.contact(impl.conn, SHOP, "u1")
    assert view is not None
    a = view.aggregate
    assert (a.orders_count, a.gross, a.refunded, a.net_monetary) == (
        1,
        Decimal("80.50"),
        Decimal(30),
        Decimal("50.50"),
    )
    assert (a.first_order_at, a.last_order_at, a.last_order_total) == (at, at, Decimal("80.50"))
    assert a.open_carts == {}
    assert a.last_email_open_at == at
    assert a.updated_at == at
    assert a.traits == traits
    assert a.birthday == date(1990, 2, 3)
    assert a.consent == {"email:marketing": "granted"}
    assert view.profile is not None
    assert (view.profile.stage, view.profile.tier, view.profile.segment) == (
        "new_customer",
        "discovery",
        None,
    )
    assert await impl.store.contact(impl.conn, "other-shop", "u1") is None


async def test_an_alias_moves_the_anonymous_history_and_its_ledger(impl: Impl) -> None:
    anon = "anon:v1"
    await impl.apply(ev(ContactIdentified(traits=ContactTraits(first_name="Ada")), key=anon), NOW)
    await impl.apply(order("o1", 40, NOW - timedelta(days=10), key=anon), NOW)
    await impl.apply(ev(ContactIdentified(user_id="u1", traits=ContactTraits(email="a@x.io"))), NOW)
    await impl.apply(order("o2", 60, NOW - timedelta(days=5)), NOW)

    found = await impl.apply(ev(ContactAliased(user_id="u1", previous_id="v1")), NOW)

    assert kinds(found) == [
        ("LifecycleStageChanged", "new_customer", "loyal"),
        ("LoyaltyTierChanged", "discovery", "recurrence"),
    ]
    assert await impl.store.contact(impl.conn, SHOP, anon) is None
    view = await impl.store.contact(impl.conn, SHOP, "u1")
    assert view is not None
    a = view.aggregate
    assert (a.orders_count, a.gross) == (2, Decimal(100))
    assert (a.first_order_at, a.last_order_at, a.last_order_total) == (
        NOW - timedelta(days=10),
        NOW - timedelta(days=5),
        Decimal(60),
    )
    assert (a.traits.email, a.traits.first_name) == ("a@x.io", "Ada")
    # the ledger follows: a rebuild of u1 from it counts the anonymous order
    await impl.load([OrderLine("o3", "u1", NOW - timedelta(days=1), Decimal(5))])
    view = await impl.store.contact(impl.conn, SHOP, "u1")
    assert view is not None
    assert (view.aggregate.orders_count, view.aggregate.gross) == (3, Decimal(105))


async def test_an_event_is_scored_against_the_stored_boundaries(impl: Impl) -> None:
    orders, refunds = generated_ledger(seed=3, contacts=50)
    await impl.load(orders, refunds)
    await impl.recompute(NOW)
    summary = await impl.store.summary(impl.conn, SHOP)
    assert summary.boundaries is not None

    later = NOW + timedelta(days=2)
    found = await impl.apply(order("n1", 250, later, key="newcomer"), later)

    values = RfmValues(0, 1, Decimal(250))
    scores = score_values(summary.boundaries, values)
    segment = [c.payload for c in found if isinstance(c.payload, RfmSegmentChanged)]
    assert [(p.previous, p.r, p.f, p.m) for p in segment] == [(None, scores.r, scores.f, scores.m)]
    view = await impl.store.contact(impl.conn, SHOP, "newcomer")
    assert view is not None
    assert view.profile is not None
    assert (view.profile.r, view.profile.f, view.profile.m) == (scores.r, scores.f, scores.m)
    assert view.profile.segment == segment[0].current


# --- import_orders -----------------------------------------------------------------------


async def test_import_rebuilds_aggregates_from_the_ledger_and_skips_known_ids(
    impl: Impl,
) -> None:
    await impl.apply(ev(ContactIdentified(traits=ContactTraits(email="c1@x.io")), key="c1"), NOW)
    same_time = NOW - timedelta(days=1)
    orders = [
        OrderLine("o1", "c1", NOW - timedelta(days=3), Decimal(10)),
        OrderLine("t-a", "c1", same_time, Decimal(5)),
        OrderLine("t-b", "c1", same_time, Decimal(7)),
        OrderLine("o3", "c2", NOW - timedelta(days=2), Decimal(30)),
    ]
    refunds = [
        RefundLine("r1", "c2", NOW, Decimal(5), order_id="o3"),
        RefundLine("r2", "c3", NOW, Decimal(7)),
    ]

    assert await impl.load(orders, refunds) == (4, 2, 3)
    assert await impl.load(orders, refunds) == (0, 0, 0)

    c1 = await impl.store.contact(impl.conn, SHOP, "c1")
    assert c1 is not None
    a = c1.aggregate
    assert (a.orders_count, a.gross, a.refunded) == (3, Decimal(22), Decimal(0))
    assert (a.first_order_at, a.last_order_at) == (NOW - timedelta(days=3), same_time)
    assert a.last_order_total == Decimal(7)  # same instant: the larger order id
    assert a.traits.email == "c1@x.io"
    assert a.updated_at == NOW
    c3 = await impl.store.contact(impl.conn, SHOP, "c3")
    assert c3 is not None
    assert (c3.aggregate.orders_count, c3.aggregate.refunded) == (0, Decimal(7))
    assert c3.aggregate.last_order_at is None
    assert c3.profile is None  # scores come with the recompute
    c2 = await impl.store.contact(impl.conn, SHOP, "c2")
    assert c2 is not None
    assert c2.aggregate.net_monetary == Decimal(25)


# --- shops, locks ------------------------------------------------------------------------


async def test_shops_their_last_recompute_and_which_have_customers(impl: Impl) -> None:
    assert await impl.store.shops(impl.conn) == {}
    await impl.apply(ev(ContactIdentified(user_id="u1"), shop="a"), NOW)
    await impl.load([OrderLine("o1", "c1", NOW, Decimal(10))], shop="b")
    assert await impl.store.shops(impl.conn) == {"a": None, "b": None}
    assert await impl.store.shops_with_customers(impl.conn, {"a", "b", "z"}) == set()

    await impl.recompute(NOW, shop="a")
    await impl.recompute(NOW, shop="b")

    assert await impl.store.shops(impl.conn) == {"a": NOW, "b": NOW}
    assert await impl.store.last_recompute(impl.conn, "b") == NOW
    assert await impl.store.last_recompute(impl.conn, "z") is None
    assert await impl.store.shops_with_customers(impl.conn, ["a", "b", "z"]) == {"b"}


async def test_a_free_recompute_lock_is_granted(impl: Impl) -> None:
    async with impl.conn.transaction():
        assert await impl.store.lock_recompute(impl.conn, SHOP, wait=False)
        assert await impl.store.lock_recompute(impl.conn, "other", wait=True)


# --- recompute ---------------------------------------------------------------------------


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


def expected_basket(orders: list[OrderLine], now: datetime) -> Decimal | None:
    since = now - timedelta(days=WINDOW_DAYS)
    totals = [o.total for o in orders if since < o.ordered_at <= now]
    if not totals:
        return None
    mean = sum(totals, Decimal(0)) / len(totals)
    return mean.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


async def test_recompute_scores_every_contact_as_the_domain_does(impl: Impl) -> None:
    orders, refunds = generated_ledger(seed=7, contacts=299)
    orders.append(OrderLine("ahead", "c-ahead", NOW + timedelta(hours=30), Decimal(99)))
    await impl.load(orders, refunds)
    for i in range(5):
        await impl.apply(ev(ContactIdentified(user_id=f"p{i}"), key=f"p{i}"), NOW)

    result, chunks = await impl.recompute(NOW)

    keys = sorted({o.contact_key for o in orders})
    values: dict[str, RfmValues] = {}
    for key in keys:
        view = await impl.store.contact(impl.conn, SHOP, key)
        assert view is not None
        v = view.aggregate.rfm_values(NOW)
        assert v is not None
        values[key] = v
    bounds = boundaries(values)
    summary = await impl.store.summary(impl.conn, SHOP)
    assert summary.boundaries == bounds
    assert summary.as_of == NOW
    for key in [*keys, "p0"]:
        view = await impl.store.contact(impl.conn, SHOP, key)
        assert view is not None
        assert view.profile == profile_of(view.aggregate, bounds, CONFIG, NOW)
    staged = [c for chunk in chunks for c in chunk]
    # the prospects kept the profile their identify gave them
    assert (result.contacts, result.customers, result.profiles_written) == (305, 300, 300)
    assert result.changes_recorded == len(staged) == 300 * 3
    assert result.average_basket == summary.average_basket == expected_basket(orders, NOW)
    assert sum(summary.per_stage.values()) == 305
    assert sum(summary.per_segment.values()) == sum(summary.per_tier.values()) == 300
    assert len({c.event().event_id for c in staged}) == len(staged)
    assert all(c.cause == f"recompute:{NOW.isoformat()}" for c in staged)

    again, chunks = await impl.recompute(NOW)
    assert (again.profiles_written, again.changes_recorded, chunks) == (0, 0, [])


async def test_time_alone_moves_contacts_to_lapsing_once(impl: Impl) -> None:
    await impl.load(
        [
            OrderLine("o1", "old", datetime(2024, 1, 10, 9, 30, tzinfo=UTC), Decimal(50)),
            OrderLine("o2", "old", datetime(2023, 12, 1, 9, 30, tzinfo=UTC), Decimal(50)),
            OrderLine("o3", "fresh", datetime(2024, 7, 1, tzinfo=UTC), Decimal(20)),
        ]
    )
    day_before = datetime(2024, 7, 9, 9, 30, tzinfo=UTC)
    _, chunks = await impl.recompute(day_before, batch=4)
    assert [len(c) for c in chunks] == [6]  # two contacts: stage, tier, segment each

    that_day = datetime(2024, 7, 10, 9, 30, tzinfo=UTC)
    result, chunks = await impl.recompute(that_day)
    pending = [c for chunk in chunks for c in chunk]
    stages = [c for c in pending if isinstance(c.payload, LifecycleStageChanged)]
    assert [(c.contact_key, c.payload.previous, c.payload.current) for c in stages] == [
        ("old", "loyal", "lapsing")
    ]
    assert result.changes_recorded == len(pending)
    result, chunks = await impl.recompute(that_day + timedelta(hours=1))
    assert (result.profiles_written, chunks) == (0, [])


async def test_recompute_changes_come_in_batches_of_whole_contacts(impl: Impl) -> None:
    await impl.load([OrderLine(f"o{i}", f"c{i}", NOW, Decimal(10 + i)) for i in range(5)])
    _, one = await impl.recompute(NOW)
    _, chunks = await impl.recompute(NOW, batch=4)  # nothing changed since
    assert chunks == []
    later = NOW + timedelta(days=400)  # all five become ex-customers
    async with impl.conn.transaction():
        await impl.store.recompute(impl.conn, SHOP, later)
        chunks = [c async for c in impl.store.recompute_changes(impl.conn, SHOP, later, 4)]
        flat = await changes_of(impl, later)
    assert [len(c) for c in one] == [15]
    assert [c for chunk in chunks for c in chunk] == flat
    assert all(len(c) >= 4 for c in chunks[:-1])
    assert len(chunks) > 1


async def test_average_basket_counts_orders_in_the_window_ending_now(impl: Impl) -> None:
    start = NOW - timedelta(days=WINDOW_DAYS)
    await impl.load(
        [
            OrderLine("edge", "c1", start, Decimal(1000)),
            OrderLine("in1", "c1", start + timedelta(microseconds=1), Decimal(10)),
            OrderLine("in2", "c2", NOW, Decimal(15)),
            OrderLine("in3", "c2", NOW - timedelta(days=1), Decimal("0.00005")),
            OrderLine("future", "c3", NOW + timedelta(seconds=1), Decimal(1000)),
        ]
    )
    result, _ = await impl.recompute(NOW)
    assert result.average_basket == Decimal("8.3334")  # 8.33335, half up
    empty, _ = await impl.recompute(NOW - timedelta(days=100))
    assert empty.average_basket is None


# --- the revision guard: events racing a recompute -----------------------------------------


async def two_imported(impl: Impl) -> None:
    await impl.load(
        [
            OrderLine("o1", "x", NOW - timedelta(days=10), Decimal(40)),
            OrderLine("o2", "y", NOW - timedelta(days=20), Decimal(60)),
        ]
    )


async def test_an_event_after_the_diff_keeps_its_profile_and_its_changes(impl: Impl) -> None:
    await two_imported(impl)
    await impl.recompute(NOW)
    later = NOW + timedelta(days=200)  # both lapse: one of them orders again meanwhile
    event_changes: list[SegmentChange] = []

    async def x_orders_again() -> None:
        async with impl.other.transaction():
            made = await impl.store.apply_event(impl.other, order("o3", 40, later, "x"), later)
            event_changes.extend(made)

    result, staged = await impl.recompute_racing(later, x_orders_again)

    assert {c.contact_key for c in staged} == {"y"}
    assert (result.profiles_written, result.changes_recorded) == (1, len(staged))
    stage = [c.payload for c in event_changes if isinstance(c.payload, LifecycleStageChanged)]
    assert [(p.previous, p.current) for p in stage] == [("new_customer", "loyal")]
    x = await impl.store.contact(impl.conn, SHOP, "x")
    y = await impl.store.contact(impl.conn, SHOP, "y")
    assert x is not None and x.profile is not None
    assert y is not None and y.profile is not None
    assert (x.profile.stage, y.profile.stage) == ("loyal", "lapsing")


async def test_a_first_profile_written_by_an_event_after_the_diff_is_kept(impl: Impl) -> None:
    await two_imported(impl)
    event_changes: list[SegmentChange] = []

    async def x_orders() -> None:
        async with impl.other.transaction():
            made = await impl.store.apply_event(impl.other, order("o3", 40, NOW, "x"), NOW)
            event_changes.extend(made)

    result, staged = await impl.recompute_racing(NOW, x_orders)

    assert {c.contact_key for c in staged} == {"y"}
    assert (result.profiles_written, result.changes_recorded, len(staged)) == (1, 3, 3)
    stage = [c.payload for c in event_changes if isinstance(c.payload, LifecycleStageChanged)]
    assert [(p.previous, p.current) for p in stage] == [(None, "loyal")]
    tiers = [c.payload for c in event_changes if isinstance(c.payload, LoyaltyTierChanged)]
    assert [(p.previous, p.current) for p in tiers] == [(None, "recurrence")]
    x = await impl.store.contact(impl.conn, SHOP, "x")
    assert x is not None and x.profile is not None
    assert x.profile.stage == "loyal"


async def test_a_profile_whose_contact_was_merged_away_goes_at_the_next_recompute(
    impl: Impl,
) -> None:
    await two_imported(impl)

    async def y_is_merged_into_x() -> None:
        async with impl.other.transaction():
            alias = ev(ContactAliased(user_id="x", previous_id="y"), key="x")
            await impl.store.apply_event(impl.other, alias, NOW)

    result, staged = await impl.recompute_racing(NOW, y_is_merged_into_x)
    # the recompute wrote y's first profile as its contact went: reported, counted once
    assert {c.contact_key for c in staged} == {"y"}
    assert result.profiles_written == 1
    assert sum((await impl.store.summary(impl.conn, SHOP)).per_stage.values()) == 2
    assert await impl.store.contact(impl.conn, SHOP, "y") is None

    later = NOW + timedelta(days=1)
    result, chunks = await impl.recompute(later)
    assert result.contacts == 1
    assert {c.contact_key for chunk in chunks for c in chunk} == {"x"}  # its first scores
    assert (await impl.store.summary(impl.conn, SHOP)).per_stage == {"loyal": 1}
    x = await impl.store.contact(impl.conn, SHOP, "x")
    assert x is not None
    assert x.aggregate.orders_count == 2
