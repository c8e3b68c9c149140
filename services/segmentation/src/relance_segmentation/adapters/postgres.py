"""PostgreSQL repository: per-event aggregate updates and the set-based full recompute.

Every method takes an asyncpg connection already inside a transaction, so the caller can
record the inbox entry, the effect and the change events (outbox) atomically. A contact's
aggregates and scored profile share one row: an event costs one read (with the ledger
insert) and one write.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from relance_events.envelope import TraceContext, deterministic_id
from relance_events.event import Event, new_event
from relance_events.payloads import (
    ContactTraits,
    LifecycleStage,
    LifecycleStageChanged,
    LoyaltyTier,
    LoyaltyTierChanged,
    OrderCompleted,
    OrderRefunded,
    Payload,
    RfmSegment,
    RfmSegmentChanged,
)
from relance_segmentation.domain.aggregates import (
    RELEVANT_TYPES,
    ContactAggregate,
    ContactProfile,
    OpenCart,
    alias_sources,
    apply,
    changes,
    merge,
    profile_of,
)
from relance_segmentation.domain.lifecycle import Cutoffs, LifecycleConfig
from relance_segmentation.domain.rfm import RfmBoundaries, recency_days
from relance_segmentation.domain.segments import segment_grid

Connection = asyncpg.Connection | PoolConnectionProxy

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SOURCE = "segmentation"

SegmentPayload = LifecycleStageChanged | LoyaltyTierChanged | RfmSegmentChanged


@dataclass(frozen=True)
class OrderLine:
    """One order for the bulk import."""

    order_id: str
    contact_key: str
    ordered_at: datetime
    total: Decimal


@dataclass(frozen=True)
class RefundLine:
    refund_id: str
    contact_key: str
    refunded_at: datetime
    amount: Decimal
    order_id: str | None = None


@dataclass(frozen=True)
class SegmentChange:
    """One change of stage, tier or RFM segment. `cause` names what made it (an event id
    or a recompute instant), so its event id is the same however often it is rebuilt."""

    shop_id: str
    contact_key: str
    payload: SegmentPayload
    cause: str

    def event(self, trace: TraceContext | None = None) -> Event[Payload]:
        return new_event(
            self.payload,
            shop_id=self.shop_id,
            contact_key=self.contact_key,
            source=SOURCE,
            occurred_at=self.payload.as_of,
            event_id=deterministic_id(
                SOURCE, self.shop_id, self.contact_key, self.payload.TYPE, self.cause
            ),
            trace=trace,
        )


@dataclass(frozen=True)
class ImportResult:
    orders_inserted: int
    refunds_inserted: int
    contacts_updated: int


@dataclass(frozen=True)
class RecomputeResult:
    """`changes_recorded` events wait in this transaction's staging table
    (`recompute_changes` reads them)."""

    contacts: int
    customers: int
    profiles_written: int
    changes_recorded: int
    average_basket: Decimal | None


@dataclass(frozen=True)
class ScoredContact:
    """RFM values and scores as the database holds them, for checks and exports."""

    contact_key: str
    recency_days: int
    frequency: int
    monetary: Decimal
    r: int
    f: int
    m: int
    segment: RfmSegment


@dataclass(frozen=True)
class ContactView:
    """What `GET /v1/contacts/{user_id}` shows."""

    aggregate: ContactAggregate
    profile: ContactProfile | None


@dataclass(frozen=True)
class ShopSummary:
    """What `GET /v1/segments/summary` shows."""

    per_stage: dict[str, int]
    per_tier: dict[str, int]
    per_segment: dict[str, int]
    average_basket: Decimal | None
    as_of: datetime | None
    boundaries: RfmBoundaries | None = field(default=None)


_CONTACT_COLUMNS = """
    c.contact_key, c.traits::text as traits, c.consent::text as consent, c.orders_count,
    c.gross, c.refunded, c.first_order_at, c.last_order_at, c.last_order_total,
    c.open_carts::text as open_carts, c.last_email_open_at, c.last_email_click_at,
    c.updated_at, c.r, c.f, c.m, c.segment, c.stage, c.tier, c.profiled_at
"""

# One round trip: record the ledger entry (if any), lock the contact, read the bounds.
_READ_FOR_EVENT = """
with ledger as ({ledger})
select (select count(*) from ledger) as fresh, c.*,
       s.r_bounds, s.f_bounds, s.m_bounds, s.customers
from (select 1) as one
left join lateral (
    select {columns} from segmentation_contacts c
    where c.shop_id = $1 and c.contact_key = $2 for update
) c on true
left join segmentation_shop_stats s on s.shop_id = $1
"""

_NO_LEDGER = "select 1 where false"
_ORDER_LEDGER = (
    "insert into segmentation_orders (shop_id, order_id, contact_key, ordered_at, total)"
    " values ($1, $3, $2, $4, $5) on conflict do nothing returning 1"
)
_REFUND_LEDGER = (
    "insert into segmentation_refunds"
    " (shop_id, refund_id, order_id, contact_key, refunded_at, amount)"
    " values ($1, $3, $6, $2, $4, $5) on conflict do nothing returning 1"
)

_READ_PLAIN = _READ_FOR_EVENT.format(ledger=_NO_LEDGER, columns=_CONTACT_COLUMNS)
_READ_ORDER = _READ_FOR_EVENT.format(ledger=_ORDER_LEDGER, columns=_CONTACT_COLUMNS)
_READ_REFUND = _READ_FOR_EVENT.format(ledger=_REFUND_LEDGER, columns=_CONTACT_COLUMNS)

_WRITE_CONTACT = """
update segmentation_contacts set traits = $3::text::jsonb, consent = $4::text::jsonb,
    orders_count = $5, gross = $6, refunded = $7, first_order_at = $8, last_order_at = $9,
    last_order_total = $10, open_carts = $11::text::jsonb, last_email_open_at = $12,
    last_email_click_at = $13, birthday = $14, signup_at = $15, updated_at = $16,
    r = $17, f = $18, m = $19, segment = $20, stage = $21, tier = $22, profiled_at = $23
where shop_id = $1 and contact_key = $2
"""

_STAGING = """
create temp table if not exists seg_recompute_diff (
    contact_key text, orders_count integer, gross numeric, refunded numeric,
    last_order_at timestamptz, old_stage text, old_tier text, old_segment text,
    r smallint, f smallint, m smallint, segment text, stage text, tier text
) on commit drop;
create temp table if not exists seg_recompute_changes (
    contact_key text, old_stage text, stage text, old_tier text, tier text,
    old_segment text, segment text, r smallint, f smallint, m smallint
) on commit drop;
truncate seg_recompute_diff, seg_recompute_changes
"""

_BUYER = "orders_count > 0 and last_order_at is not null"

_COUNTS = f"""
select count(*) as contacts, count(*) filter (where {_BUYER}) as buyers
from segmentation_contacts where shop_id = $1
"""

# The values at given 0-based positions of each dimension sorted worst first: one sort of
# bare values per dimension. `(k + 0.5) / n` picks position k. Recency is sorted as the
# last order time (oldest first), which orders recency in days the same way.
_AT_POSITIONS = f"""
select percentile_disc($2::float8[]) within group (order by last_order_at) as r_at,
       percentile_disc($2::float8[]) within group (order by orders_count) as f_at,
       percentile_disc($2::float8[]) within group (order by gross - refunded) as m_at
from segmentation_contacts where shop_id = $1 and {_BUYER}
"""

# Where the value at a quintile position ties with the one before it, the boundary is the
# next strictly better value: for recency, the oldest last order after `now - x days`.
_NEXT_BETTER = f"""
select array[min(last_order_at) filter (where last_order_at > $2),
             min(last_order_at) filter (where last_order_at > $3),
             min(last_order_at) filter (where last_order_at > $4),
             min(last_order_at) filter (where last_order_at > $5)] as r,
       array[min(orders_count) filter (where orders_count > $6),
             min(orders_count) filter (where orders_count > $7),
             min(orders_count) filter (where orders_count > $8),
             min(orders_count) filter (where orders_count > $9)] as f,
       array[min(gross - refunded) filter (where gross - refunded > $10),
             min(gross - refunded) filter (where gross - refunded > $11),
             min(gross - refunded) filter (where gross - refunded > $12),
             min(gross - refunded) filter (where gross - refunded > $13)] as m
from segmentation_contacts where shop_id = $1 and {_BUYER}
"""

# Scores against the boundaries (what `domain.rfm.score_values` does), stage and tier, in
# one scan with no sort; only rows whose profile changed are staged. `recency <= t days`
# is `last_order_at > now - (t + 1) days`: $11 holds those instants.
_DIFF = f"""
insert into seg_recompute_diff
select contact_key, orders_count, gross, refunded, last_order_at, old_stage, old_tier,
       old_segment, r, f, m, segment, stage, tier
from (
    select s.*,
           case when s.r is not null then ($4::text[])[(s.r - 1) * 5 + (s.f + s.m) / 2] end
               as segment,
           case
               when not s.buyer then 'prospect'
               when s.last_order_at <= $3 then 'ex_customer'
               when s.last_order_at <= $2 then 'lapsing'
               when s.orders_count >= $5 or s.m >= $6 then 'ambassador'
               when s.orders_count >= 2 then 'loyal'
               else 'new_customer'
           end as stage,
           case
               when not s.buyer then null
               when s.last_order_at > $2 and s.orders_count >= $9 and s.net >= $10
                   then 'ambassador'
               when s.orders_count >= $7 or s.net >= $8 then 'premium'
               when s.orders_count >= 2 then 'recurrence'
               else 'discovery'
           end as tier
    from (
        select c.contact_key, c.orders_count, c.gross, c.refunded, c.last_order_at,
               c.gross - c.refunded as net, {_BUYER} as buyer,
               c.r as old_r, c.f as old_f, c.m as old_m, c.segment as old_segment,
               c.stage as old_stage, c.tier as old_tier,
               case when {_BUYER} then (1
                   + coalesce((c.last_order_at > ($11::timestamptz[])[1])::int, 0)
                   + coalesce((c.last_order_at > ($11::timestamptz[])[2])::int, 0)
                   + coalesce((c.last_order_at > ($11::timestamptz[])[3])::int, 0)
                   + coalesce((c.last_order_at > ($11::timestamptz[])[4])::int, 0))::smallint
               end as r,
               case when {_BUYER} then (1
                   + coalesce((c.orders_count >= ($12::int[])[1])::int, 0)
                   + coalesce((c.orders_count >= ($12::int[])[2])::int, 0)
                   + coalesce((c.orders_count >= ($12::int[])[3])::int, 0)
                   + coalesce((c.orders_count >= ($12::int[])[4])::int, 0))::smallint
               end as f,
               case when {_BUYER} then (1
                   + coalesce((c.gross - c.refunded >= ($13::numeric[])[1])::int, 0)
                   + coalesce((c.gross - c.refunded >= ($13::numeric[])[2])::int, 0)
                   + coalesce((c.gross - c.refunded >= ($13::numeric[])[3])::int, 0)
                   + coalesce((c.gross - c.refunded >= ($13::numeric[])[4])::int, 0))::smallint
               end as m
        from segmentation_contacts c where c.shop_id = $1 offset 0
    ) as s
) as fresh
where old_stage is null
   or old_r is distinct from r or old_f is distinct from f or old_m is distinct from m
   or old_segment is distinct from segment or old_stage is distinct from stage
   or old_tier is distinct from tier
"""

# The update re-checks, on the row's latest version, that its aggregates and profile are
# still those it scored: a contact an event touched meanwhile keeps the event's profile
# until the next recompute, and no change is ever reported twice.
_WRITE_DIFF = """
with written as (
    update segmentation_contacts c set
        r = d.r, f = d.f, m = d.m, segment = d.segment, stage = d.stage, tier = d.tier,
        profiled_at = $2
    from seg_recompute_diff d
    where c.shop_id = $1 and c.contact_key = d.contact_key
      and c.orders_count = d.orders_count and c.gross = d.gross and c.refunded = d.refunded
      and c.last_order_at is not distinct from d.last_order_at
      and c.stage is not distinct from d.old_stage and c.tier is not distinct from d.old_tier
      and c.segment is not distinct from d.old_segment
    returning d.contact_key, d.old_stage, d.stage, d.old_tier, d.tier, d.old_segment,
              d.segment, d.r, d.f, d.m
),
staged as (
    insert into seg_recompute_changes
    select * from written
    where old_stage is distinct from stage
       or (tier is not null and old_tier is distinct from tier)
       or (segment is not null and old_segment is distinct from segment)
    returning (old_stage is distinct from stage)::int
              + (tier is not null and old_tier is distinct from tier)::int
              + (segment is not null and old_segment is distinct from segment)::int as n
)
select (select count(*) from written) as written,
       (select coalesce(sum(n), 0) from staged) as recorded
"""

_STATS = """
insert into segmentation_shop_stats as s
    (shop_id, as_of, customers, contacts, average_basket, basket_window_days,
     r_bounds, f_bounds, m_bounds)
values ($1, $2, $3, $4,
        (select round(avg(total), 4) from segmentation_orders
          where shop_id = $1 and ordered_at > $2::timestamptz - make_interval(days => $5)
            and ordered_at <= $2::timestamptz),
        $5, $6, $7, $8)
on conflict (shop_id) do update set
    as_of = excluded.as_of, customers = excluded.customers, contacts = excluded.contacts,
    average_basket = excluded.average_basket, basket_window_days = excluded.basket_window_days,
    r_bounds = excluded.r_bounds, f_bounds = excluded.f_bounds, m_bounds = excluded.m_bounds
returning average_basket
"""

_REBUILD_FROM_LEDGER = """
with affected as (select distinct unnest($3::text[]) as contact_key),
o as (
    select contact_key, count(*) as n, sum(total) as gross, min(ordered_at) as first_at,
           max(ordered_at) as last_at,
           (array_agg(total order by ordered_at desc, order_id desc))[1] as last_total
    from segmentation_orders
    where shop_id = $1 and contact_key in (select contact_key from affected)
    group by contact_key
),
r as (
    select contact_key, sum(amount) as refunded from segmentation_refunds
    where shop_id = $1 and contact_key in (select contact_key from affected)
    group by contact_key
)
insert into segmentation_contacts as c
    (shop_id, contact_key, orders_count, gross, refunded, first_order_at, last_order_at,
     last_order_total, updated_at)
select $1, a.contact_key, coalesce(o.n, 0), coalesce(o.gross, 0), coalesce(r.refunded, 0),
       o.first_at, o.last_at, o.last_total, $2
from affected a left join o using (contact_key) left join r using (contact_key)
on conflict (shop_id, contact_key) do update set
    orders_count = excluded.orders_count, gross = excluded.gross, refunded = excluded.refunded,
    first_order_at = excluded.first_order_at, last_order_at = excluded.last_order_at,
    last_order_total = excluded.last_order_total, updated_at = excluded.updated_at
"""

# Shops in one index skip: one probe per distinct shop, whatever their sizes.
_SHOPS = """
with recursive shops as (
    (select shop_id from segmentation_contacts order by shop_id limit 1)
    union all
    select (select c.shop_id from segmentation_contacts c where c.shop_id > s.shop_id
            order by c.shop_id limit 1)
    from shops s where s.shop_id is not null
)
select shops.shop_id, st.as_of from shops
left join segmentation_shop_stats st using (shop_id)
where shops.shop_id is not null
"""


def _bounds(row: asyncpg.Record) -> RfmBoundaries | None:
    if row["r_bounds"] is None or not row["customers"]:
        return None
    r, f, m = list(row["r_bounds"]), list(row["f_bounds"]), list(row["m_bounds"])
    return RfmBoundaries(
        recency_days=(r[0], r[1], r[2], r[3]),
        frequency=(f[0], f[1], f[2], f[3]),
        monetary=(m[0], m[1], m[2], m[3]),
        population=int(row["customers"]),
    )


def _aggregate(shop_id: str, contact_key: str, row: asyncpg.Record) -> ContactAggregate:
    carts_raw: dict[str, dict[str, Any]] = json.loads(row["open_carts"])
    return ContactAggregate(
        shop_id=shop_id,
        contact_key=contact_key,
        traits=ContactTraits.model_validate_json(row["traits"]),
        consent=json.loads(row["consent"]),
        orders_count=row["orders_count"],
        gross=row["gross"],
        refunded=row["refunded"],
        first_order_at=row["first_order_at"],
        last_order_at=row["last_order_at"],
        last_order_total=row["last_order_total"],
        open_carts={
            k: OpenCart(
                cart_id=k,
                total=Decimal(v["total"]),
                currency=v["currency"],
                items=int(v["items"]),
                updated_at=datetime.fromisoformat(v["updated_at"]),
            )
            for k, v in carts_raw.items()
        },
        last_email_open_at=row["last_email_open_at"],
        last_email_click_at=row["last_email_click_at"],
        updated_at=row["updated_at"],
    )


def _profile(contact_key: str, row: asyncpg.Record) -> ContactProfile | None:
    if row["stage"] is None:
        return None
    return ContactProfile(
        user_id=contact_key,
        stage=cast(LifecycleStage, row["stage"]),
        tier=cast(LoyaltyTier | None, row["tier"]),
        r=row["r"],
        f=row["f"],
        m=row["m"],
        segment=cast(RfmSegment | None, row["segment"]),
    )


def _carts_json(carts: dict[str, OpenCart]) -> str:
    return json.dumps(
        {
            k: {
                "total": str(c.total),
                "currency": c.currency,
                "items": c.items,
                "updated_at": c.updated_at.isoformat(),
            }
            for k, c in carts.items()
        }
    )


def _staged_changes(
    shop_id: str, row: asyncpg.Record, now: datetime, cause: str
) -> list[SegmentChange]:
    key = row["contact_key"]
    before = None
    if row["old_stage"] is not None:
        before = ContactProfile(
            user_id=key,
            stage=cast(LifecycleStage, row["old_stage"]),
            tier=cast(LoyaltyTier | None, row["old_tier"]),
            segment=cast(RfmSegment | None, row["old_segment"]),
        )
    after = ContactProfile(
        user_id=key,
        stage=cast(LifecycleStage, row["stage"]),
        tier=cast(LoyaltyTier | None, row["tier"]),
        r=row["r"],
        f=row["f"],
        m=row["m"],
        segment=cast(RfmSegment | None, row["segment"]),
    )
    return [
        SegmentChange(shop_id, key, cast(SegmentPayload, p), cause)
        for p in changes(before, after, now)
    ]


class SegmentationRepository:
    """Aggregates and scored profiles of every contact of every shop."""

    def __init__(self, config: LifecycleConfig, basket_window_days: int = 365) -> None:
        self._config = config
        self._basket_window_days = basket_window_days

    # --- per event ---------------------------------------------------------------------

    async def apply_event(
        self, conn: Connection, event: Event[Payload], now: datetime
    ) -> list[SegmentChange]:
        """Fold one event into its contact; returns the stage/tier/segment changes.

        An order id (or a refund event) seen before changes nothing. An alias (or an
        identify naming an anonymous id) first moves the previous contact's history in.
        """
        if event.type not in RELEVANT_TYPES:
            return []
        shop, key, p = event.shop_id, event.contact_key, event.payload
        if isinstance(p, OrderCompleted):
            row = await conn.fetchrow(
                _READ_ORDER, shop, key, p.order_id, event.occurred_at, p.total
            )
        elif isinstance(p, OrderRefunded):
            row = await conn.fetchrow(
                _READ_REFUND,
                shop,
                key,
                str(event.event_id),
                event.occurred_at,
                p.amount,
                p.order_id,
            )
        else:
            row = await conn.fetchrow(_READ_PLAIN, shop, key)
        assert row is not None
        if isinstance(p, OrderCompleted | OrderRefunded) and row["fresh"] == 0:
            return []
        if row["contact_key"] is None:
            await conn.execute(
                "insert into segmentation_contacts (shop_id, contact_key, updated_at)"
                " values ($1, $2, $3) on conflict do nothing",
                shop,
                key,
                now,
            )
            row = await conn.fetchrow(_READ_PLAIN, shop, key)
            assert row is not None
            assert row["contact_key"] is not None
        before = _aggregate(shop, key, row)
        sources = alias_sources(event)
        if sources:
            before = await self._absorb(conn, before, sources, now)
        after = apply(before, event, now)
        return await self._store(
            conn, after, _profile(key, row), row["profiled_at"], _bounds(row), now, event
        )

    async def _absorb(
        self, conn: Connection, known: ContactAggregate, sources: Sequence[str], now: datetime
    ) -> ContactAggregate:
        rows = await conn.fetch(
            f"select {_CONTACT_COLUMNS} from segmentation_contacts c"
            " where c.shop_id = $1 and c.contact_key = any($2::text[])"
            " order by c.contact_key for update",
            known.shop_id,
            list(sources),
        )
        if not rows:
            return known
        merged = known
        for r in rows:
            merged = merge(merged, _aggregate(known.shop_id, r["contact_key"], r), now)
        found = [r["contact_key"] for r in rows]
        for table in ("segmentation_orders", "segmentation_refunds"):
            await conn.execute(
                f"update {table} set contact_key = $2"
                " where shop_id = $1 and contact_key = any($3::text[])",
                known.shop_id,
                known.contact_key,
                found,
            )
        await conn.execute(
            "delete from segmentation_contacts where shop_id = $1 and contact_key = any($2)",
            known.shop_id,
            found,
        )
        return merged

    async def _store(
        self,
        conn: Connection,
        agg: ContactAggregate,
        before: ContactProfile | None,
        profiled_at: datetime | None,
        bounds: RfmBoundaries | None,
        now: datetime,
        cause: Event[Payload],
    ) -> list[SegmentChange]:
        after = profile_of(agg, bounds, self._config, now)
        changed = after != before
        t = agg.traits
        await conn.execute(
            _WRITE_CONTACT,
            agg.shop_id,
            agg.contact_key,
            t.model_dump_json(exclude_defaults=True),
            json.dumps(agg.consent),
            agg.orders_count,
            agg.gross,
            agg.refunded,
            agg.first_order_at,
            agg.last_order_at,
            agg.last_order_total,
            _carts_json(agg.open_carts),
            agg.last_email_open_at,
            agg.last_email_click_at,
            t.birthday,
            t.signup_at,
            agg.updated_at,
            after.r,
            after.f,
            after.m,
            after.segment,
            after.stage,
            after.tier,
            now if changed else profiled_at,
        )
        if not changed:
            return []
        return [
            SegmentChange(
                agg.shop_id, agg.contact_key, cast(SegmentPayload, p), f"event:{cause.event_id}"
            )
            for p in changes(before, after, now)
        ]

    # --- bulk --------------------------------------------------------------------------

    async def import_orders(
        self,
        conn: Connection,
        shop_id: str,
        orders: Iterable[OrderLine],
        refunds: Iterable[RefundLine],
        now: datetime,
    ) -> ImportResult:
        """Load orders and refunds with COPY (known ids are skipped), then rebuild the
        aggregates of the contacts concerned from the ledger. Scores come with `recompute`."""
        await conn.execute(
            "create temp table if not exists seg_in_orders"
            " (order_id text, contact_key text, ordered_at timestamptz, total numeric)"
            " on commit drop;"
            "create temp table if not exists seg_in_refunds"
            " (refund_id text, order_id text, contact_key text, refunded_at timestamptz,"
            " amount numeric) on commit drop;"
            "truncate seg_in_orders, seg_in_refunds"
        )
        await conn.copy_records_to_table(
            "seg_in_orders",
            records=((o.order_id, o.contact_key, o.ordered_at, o.total) for o in orders),
        )
        await conn.copy_records_to_table(
            "seg_in_refunds",
            records=(
                (r.refund_id, r.order_id, r.contact_key, r.refunded_at, r.amount) for r in refunds
            ),
        )
        new_orders = await conn.fetch(
            "insert into segmentation_orders (shop_id, order_id, contact_key, ordered_at, total)"
            " select distinct on (order_id) $1, order_id, contact_key, ordered_at, total"
            " from seg_in_orders order by order_id"
            " on conflict do nothing returning contact_key",
            shop_id,
        )
        new_refunds = await conn.fetch(
            "insert into segmentation_refunds"
            " (shop_id, refund_id, order_id, contact_key, refunded_at, amount)"
            " select distinct on (refund_id) $1, refund_id, order_id, contact_key, refunded_at,"
            " amount from seg_in_refunds order by refund_id"
            " on conflict do nothing returning contact_key",
            shop_id,
        )
        affected = sorted({r["contact_key"] for r in (*new_orders, *new_refunds)})
        if affected:
            await conn.execute(_REBUILD_FROM_LEDGER, shop_id, now, affected)
        return ImportResult(len(new_orders), len(new_refunds), len(affected))

    async def boundaries(
        self, conn: Connection, shop_id: str, now: datetime
    ) -> RfmBoundaries | None:
        """Quintile boundaries over the shop's buyers as of `now` (None without buyers)."""
        counts = await conn.fetchrow(_COUNTS, shop_id)
        assert counts is not None
        return await self._boundaries(conn, shop_id, now, counts["buyers"])

    async def _boundaries(
        self, conn: Connection, shop_id: str, now: datetime, n: int
    ) -> RfmBoundaries | None:
        """Per score 2..5 the worst value whose count of strictly worse values reaches
        `ceil((score - 1) * n / 5)`, which is where `domain.rfm` scores it that high."""
        if n == 0:
            return None
        # ceil: 1..n; k == n means no value reaches that score
        needed = [-(-(s - 1) * n // 5) for s in (2, 3, 4, 5)]
        positions = sorted({p for k in needed if k < n for p in (k - 1, k)})
        row = await conn.fetchrow(_AT_POSITIONS, shop_id, [(p + 0.5) / n for p in positions])
        assert row is not None
        at: dict[str, dict[int, Any]] = {
            d: dict(zip(positions, row[f"{d}_at"], strict=True)) for d in "rfm"
        }
        at["r"] = {p: recency_days(v, now) for p, v in at["r"].items()}
        bounds: dict[str, list[Any]] = {d: [] for d in "rfm"}
        ties: dict[str, list[bool]] = {d: [] for d in "rfm"}
        for d in "rfm":
            for k in needed:
                bounds[d].append(at[d][k] if k < n else None)
                # the value at position k ties with the one before: not enough worse values
                ties[d].append(k < n and at[d][k - 1] == at[d][k])
        if any(any(t) for t in ties.values()):
            better = await conn.fetchrow(
                _NEXT_BETTER,
                shop_id,
                *(None if x is None else now - timedelta(days=x) for x in bounds["r"]),
                *bounds["f"],
                *bounds["m"],
            )
            assert better is not None
            found = {
                "r": [None if t is None else recency_days(t, now) for t in better["r"]],
                "f": list(better["f"]),
                "m": list(better["m"]),
            }
            for d in "rfm":
                bounds[d] = [
                    found[d][i] if tie else v
                    for i, (v, tie) in enumerate(zip(bounds[d], ties[d], strict=True))
                ]
        r, f, m = bounds["r"], bounds["f"], bounds["m"]
        return RfmBoundaries(
            recency_days=(r[0], r[1], r[2], r[3]),
            frequency=(f[0], f[1], f[2], f[3]),
            monetary=(m[0], m[1], m[2], m[3]),
            population=n,
        )

    async def recompute(self, conn: Connection, shop_id: str, now: datetime) -> RecomputeResult:
        """Re-score every contact of the shop as of `now` (set-based), write back what
        changed, stage its changes for `recompute_changes`, refresh shop figures."""
        # the quintile sorts stay in memory (this transaction only)
        await conn.execute("set local work_mem = '256MB'")
        await conn.execute(_STAGING)
        counts = await conn.fetchrow(_COUNTS, shop_id)
        assert counts is not None
        bounds = await self._boundaries(conn, shop_id, now, counts["buyers"])
        empty: list[Any] = [None] * 4
        r_bounds = empty if bounds is None else list(bounds.recency_days)
        f_bounds = empty if bounds is None else list(bounds.frequency)
        m_bounds = empty if bounds is None else list(bounds.monetary)
        c = self._config
        cut = Cutoffs.at(now, c)
        await conn.execute(
            _DIFF,
            shop_id,
            cut.lapsing,
            cut.ex_customer,
            segment_grid(),
            c.ambassador_min_orders,
            c.ambassador_min_m_score,
            c.premium_min_orders,
            c.premium_min_net,
            c.ambassador_tier_min_orders,
            c.ambassador_tier_min_net,
            [None if t is None else now - timedelta(days=t + 1) for t in r_bounds],
            f_bounds,
            m_bounds,
        )
        written = await conn.fetchrow(_WRITE_DIFF, shop_id, now)
        assert written is not None
        basket = await conn.fetchval(
            _STATS,
            shop_id,
            now,
            counts["buyers"],
            counts["contacts"],
            self._basket_window_days,
            r_bounds,
            f_bounds,
            m_bounds,
        )
        return RecomputeResult(
            contacts=counts["contacts"],
            customers=counts["buyers"],
            profiles_written=written["written"],
            changes_recorded=int(written["recorded"]),
            average_basket=basket,
        )

    async def recompute_changes(
        self, conn: Connection, shop_id: str, now: datetime, batch: int = 5000
    ) -> AsyncIterator[list[SegmentChange]]:
        """The changes the last `recompute` of this transaction staged, in batches."""
        cause = f"recompute:{now.isoformat()}"
        chunk: list[SegmentChange] = []
        async for row in conn.cursor(
            "select * from seg_recompute_changes order by contact_key", prefetch=batch
        ):
            chunk.extend(_staged_changes(shop_id, row, now, cause))
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def shops(self, conn: Connection) -> dict[str, datetime | None]:
        """Every shop with a contact, with the instant of its last recompute."""
        return {r["shop_id"]: r["as_of"] for r in await conn.fetch(_SHOPS)}

    async def last_recompute(self, conn: Connection, shop_id: str) -> datetime | None:
        at: datetime | None = await conn.fetchval(
            "select as_of from segmentation_shop_stats where shop_id = $1", shop_id
        )
        return at

    # --- reads -------------------------------------------------------------------------

    async def contact(self, conn: Connection, shop_id: str, contact_key: str) -> ContactView | None:
        row = await conn.fetchrow(
            f"select {_CONTACT_COLUMNS} from segmentation_contacts c"
            " where c.shop_id = $1 and c.contact_key = $2",
            shop_id,
            contact_key,
        )
        if row is None:
            return None
        return ContactView(_aggregate(shop_id, contact_key, row), _profile(contact_key, row))

    async def summary(self, conn: Connection, shop_id: str) -> ShopSummary:
        rows = await conn.fetch(
            "select g.dim, g.name, count(*) as n from segmentation_contacts c"
            " cross join lateral (values ('stage', c.stage), ('tier', c.tier),"
            "   ('segment', c.segment)) as g(dim, name)"
            " where c.shop_id = $1 and g.name is not null group by g.dim, g.name",
            shop_id,
        )
        counts: dict[str, dict[str, int]] = {"stage": {}, "tier": {}, "segment": {}}
        for r in rows:
            counts[r["dim"]][r["name"]] = r["n"]
        stats = await conn.fetchrow(
            "select as_of, average_basket, r_bounds, f_bounds, m_bounds, customers"
            " from segmentation_shop_stats where shop_id = $1",
            shop_id,
        )
        return ShopSummary(
            per_stage=counts["stage"],
            per_tier=counts["tier"],
            per_segment=counts["segment"],
            average_basket=None if stats is None else stats["average_basket"],
            as_of=None if stats is None else stats["as_of"],
            boundaries=None if stats is None else _bounds(stats),
        )

    async def scored_contacts(
        self, conn: Connection, shop_id: str, now: datetime
    ) -> dict[str, ScoredContact]:
        """Stored scores with the values behind them as of `now` (the last recompute's)."""
        rows = await conn.fetch(
            "select c.contact_key, c.orders_count, c.gross - c.refunded as net,"
            " floor((extract(epoch from $2::timestamptz) - extract(epoch from c.last_order_at))"
            "       / 86400)::int as recency_days, c.r, c.f, c.m, c.segment"
            " from segmentation_contacts c where c.shop_id = $1 and c.r is not null",
            shop_id,
            now,
        )
        return {
            r["contact_key"]: ScoredContact(
                r["contact_key"],
                r["recency_days"],
                r["orders_count"],
                r["net"],
                r["r"],
                r["f"],
                r["m"],
                cast(RfmSegment, r["segment"]),
            )
            for r in rows
        }


def migration_files() -> list[Path]:
    """This service's migrations, in the order they apply."""
    return sorted(MIGRATIONS.glob("*.sql"))
