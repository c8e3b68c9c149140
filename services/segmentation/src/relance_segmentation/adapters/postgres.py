"""PostgreSQL repository: per-event aggregate updates and the set-based full recompute.

Every method takes an asyncpg connection already inside a transaction, so the caller can
record the inbox entry, the effect and the change events (outbox) atomically. A contact's
aggregates (a wide row) and its scored profile (a narrow row, so that scoring a whole shop
writes little) are read together, locked, in one statement with the ledger insert, and
written together in one more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import asyncpg

from relance_events.event import Event
from relance_events.payloads import (
    ContactTraits,
    LifecycleStage,
    LoyaltyTier,
    OrderCompleted,
    OrderRefunded,
    Payload,
    RfmSegment,
)
from relance_runtime.db import Connection
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
from relance_segmentation.domain.rfm import (
    RfmBoundaries,
    boundaries_from_counts,
    worse_needed,
)
from relance_segmentation.domain.segments import segment_grid
from relance_segmentation.ports import (
    ContactView,
    ImportResult,
    OrderLine,
    RecomputeResult,
    RefundLine,
    SegmentChange,
    SegmentPayload,
    ShopSummary,
)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# How far past a quintile position the monetary sort is read to step over a tie.
_LOOK_AHEAD = 100
MonetaryBounds = tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None]


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


_CONTACT_COLUMNS = """
    c.id, c.contact_key, c.traits::text as traits, c.consent::text as consent,
    c.orders_count, c.gross, c.refunded, c.first_order_at, c.last_order_at,
    c.last_order_total, c.open_carts::text as open_carts, c.last_email_open_at,
    c.last_email_click_at, c.updated_at
"""
_PROFILE_COLUMNS = "p.revision, p.r, p.f, p.m, p.segment, p.stage, p.tier, p.profiled_at"

# One round trip: record the ledger entry (if any), lock the contact and its profile, read
# the shop's boundaries.
_READ_FOR_EVENT = f"""
with ledger as ({{ledger}})
select (select count(*) from ledger) as fresh, c.*, p.*,
       s.r_bounds, s.f_bounds, s.m_bounds, s.customers
from (select 1) as one
left join lateral (
    select {_CONTACT_COLUMNS} from segmentation_contacts c
    where c.shop_id = $1 and c.contact_key = $2 for update
) c on true
left join lateral (
    select {_PROFILE_COLUMNS} from segmentation_profiles p where p.contact_id = c.id for update
) p on true
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

_READ_PLAIN = _READ_FOR_EVENT.format(ledger=_NO_LEDGER)
_READ_ORDER = _READ_FOR_EVENT.format(ledger=_ORDER_LEDGER)
_READ_REFUND = _READ_FOR_EVENT.format(ledger=_REFUND_LEDGER)

_CREATE_CONTACT = f"""
insert into segmentation_contacts as c (shop_id, contact_key, updated_at) values ($1, $2, $3)
on conflict do nothing returning {_CONTACT_COLUMNS}
"""

_LOCK_PROFILE = (
    f"select {_PROFILE_COLUMNS} from segmentation_profiles p where p.contact_id = $1 for update"
)

_SET_CONTACT = """
update segmentation_contacts set traits = $2::text::jsonb, consent = $3::text::jsonb,
    orders_count = $4, gross = $5, refunded = $6, first_order_at = $7, last_order_at = $8,
    last_order_total = $9, open_carts = $10::text::jsonb, last_email_open_at = $11,
    last_email_click_at = $12, birthday = $13, signup_at = $14, updated_at = $15
where id = $1
"""

# An event always bumps the revision: a recompute that read the contact before it will not
# overwrite the profile this event wrote.
_WRITE = f"""
with contact as ({_SET_CONTACT})
update segmentation_profiles set revision = revision + 1, r = $16, f = $17, m = $18,
    segment = $19, stage = $20, tier = $21, profiled_at = $22
where contact_id = $1
"""

# A contact's first profile. If a recompute inserted one meanwhile, nothing is written and
# the caller compares against that profile instead.
_WRITE_FIRST = f"""
with profile as (
    insert into segmentation_profiles
        (contact_id, shop_id, revision, r, f, m, segment, stage, tier, profiled_at)
    values ($1, $23, 1, $16, $17, $18, $19, $20, $21, $22)
    on conflict do nothing returning 1
),
contact as ({_SET_CONTACT} and exists (select 1 from profile))
select count(*) from profile
"""

_BUYER = "orders_count > 0 and last_order_at is not null"

# Recency in whole days (floor) as of $2: subtracting timestamps gives days and a time of
# day under 24 h; a last order after `now` has negative days, rounded down too.
_RECENCY_DAYS = """
case when last_order_at <= $2::timestamptz
     then date_part('day', $2::timestamptz - last_order_at)::int
     else -1 - date_part('day', last_order_at - $2::timestamptz - interval '1 microsecond')::int
end
"""

# How many contacts hold each recency (days) and each frequency, and all contacts: one scan,
# a few thousand rows back. `grouping(...)`: 1 = recency, 2 = frequency, 3 = every contact.
_HISTOGRAM = f"""
select grouping(d, f) as dim, coalesce(d, f) as value, count(*) as n
from (
    select case when {_BUYER} then {_RECENCY_DAYS} end as d,
           case when {_BUYER} then orders_count end as f
    from segmentation_contacts where shop_id = $1
) s
group by grouping sets ((d), (f), ())
"""

# The monetary values at given 0-based positions, sorted worst first (one sort of bare
# values): `(k + 0.5) / n` picks position k.
_MONETARY_AT = f"""
select percentile_disc($2::float8[]) within group (order by gross - refunded) as at
from segmentation_contacts where shop_id = $1 and {_BUYER}
"""

# Where the value at a quintile position ties with the one before it, the boundary is the
# next strictly better value.
_MONETARY_BETTER = f"""
select array[min(gross - refunded) filter (where gross - refunded > $2),
             min(gross - refunded) filter (where gross - refunded > $3),
             min(gross - refunded) filter (where gross - refunded > $4),
             min(gross - refunded) filter (where gross - refunded > $5)] as better
from segmentation_contacts where shop_id = $1 and {_BUYER}
"""

# Every contact scored against the boundaries (`width_bucket` counts the boundaries a value
# reaches, which is `domain.rfm.score_values`), with stage and tier, in one scan of contacts
# joined to their profiles; kept: new profiles, changed ones and, after a full join,
# profiles whose contact is gone (an alias merge removed it while a recompute inserted its
# profile). A shop's first recompute has no such profile: its left join runs in parallel.
# Recency reaches `t` days when `last_order_at >= now - (t + 1) days + 1 microsecond`: $11
# holds those instants. Sorted by id, so new profiles go into their index in order.
_DIFF = """
create temp table seg_recompute_diff on commit drop as
select contact_id, contact_key, revision, gone, old_stage, old_tier, old_segment,
       r, f, m, segment, stage, tier
from (
    select t.*,
           case when t.r is not null then ($4::text[])[(t.r - 1) * 5 + (t.f + t.m) / 2] end
               as segment,
           case
               when t.gone then null
               when not t.buyer then 'prospect'
               when t.last_order_at <= $3 then 'ex_customer'
               when t.last_order_at <= $2 then 'lapsing'
               when t.orders_count >= $5 or t.m >= $6 then 'ambassador'
               when t.orders_count >= 2 then 'loyal'
               else 'new_customer'
           end as stage,
           case
               when t.gone or not t.buyer then null
               when t.last_order_at > $2 and t.orders_count >= $9 and t.net >= $10
                   then 'ambassador'
               when t.orders_count >= $7 or t.net >= $8 then 'premium'
               when t.orders_count >= 2 then 'recurrence'
               else 'discovery'
           end as tier
    from (
        select coalesce(c.id, p.contact_id) as contact_id, c.contact_key, c.id is null as gone,
               c.orders_count, c.last_order_at, c.net, c.buyer, p.revision,
               p.r as old_r, p.f as old_f, p.m as old_m, p.segment as old_segment,
               p.stage as old_stage, p.tier as old_tier,
               case when c.buyer
                   then (1 + width_bucket(c.last_order_at, $11::timestamptz[]))::smallint
               end as r,
               case when c.buyer
                   then (1 + width_bucket(c.orders_count, $12::int[]))::smallint end as f,
               case when c.buyer
                   then (1 + width_bucket(c.net, $13::numeric[]))::smallint end as m
        from (
            select id, contact_key, orders_count, last_order_at, gross - refunded as net,
                   {buyer} as buyer
            from segmentation_contacts where shop_id = $1
        ) c
        {join} join (
            select contact_id, revision, r, f, m, segment, stage, tier
            from segmentation_profiles where shop_id = $1
        ) p on p.contact_id = c.id
    ) t
) s
where gone or revision is null
   or old_r is distinct from r or old_f is distinct from f or old_m is distinct from m
   or old_segment is distinct from segment or old_stage is distinct from stage
   or old_tier is distinct from tier
order by contact_id
"""
_DIFF_FIRST = _DIFF.format(buyer=_BUYER, join="left")
_DIFF = _DIFF.format(buyer=_BUYER, join="full")

# Change events per staged row: the stage always, tier and segment once they exist.
_CHANGES = """
(old_stage is distinct from stage)::int
+ (tier is not null and old_tier is distinct from tier)::int
+ (segment is not null and old_segment is distinct from segment)::int
"""

_STAGED = f"""
select count(*) filter (where not gone and revision is not null) as changed,
       count(*) filter (where not gone and revision is null) as new,
       count(*) filter (where gone) as gone,
       coalesce(sum({_CHANGES}) filter (where not gone), 0) as changes
from seg_recompute_diff
"""

# Re-checked on each profile's latest version: an event that touched the contact since the
# diff bumped its revision, so its profile stays.
_UPDATE_PROFILES = """
update segmentation_profiles p set r = d.r, f = d.f, m = d.m, segment = d.segment,
    stage = d.stage, tier = d.tier, profiled_at = $1
from seg_recompute_diff d
where p.contact_id = d.contact_id and not d.gone and d.revision is not null
  and p.revision = d.revision
"""

_INSERT_PROFILES = """
insert into segmentation_profiles
    (contact_id, shop_id, revision, r, f, m, segment, stage, tier, profiled_at)
select contact_id, $1, 0, r, f, m, segment, stage, tier, $2
from seg_recompute_diff where not gone and revision is null
"""

_DELETE_GONE = """
delete from segmentation_profiles p using seg_recompute_diff d
where d.gone and p.contact_id = d.contact_id
"""

# After a race with events: keep only the rows this recompute wrote (their revision is the
# one it read; an event's is higher, and the recompute inserts revision 0).
_FORGET_UNWRITTEN = """
delete from seg_recompute_diff d
where not d.gone and not exists (
    select 1 from segmentation_profiles p
    where p.contact_id = d.contact_id and p.revision = coalesce(d.revision, 0)
)
"""

_STATS = """
insert into segmentation_shop_stats as s
    (shop_id, as_of, customers, contacts, average_basket, basket_window_days,
     r_bounds, f_bounds, m_bounds)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
on conflict (shop_id) do update set
    as_of = excluded.as_of, customers = excluded.customers, contacts = excluded.contacts,
    average_basket = excluded.average_basket, basket_window_days = excluded.basket_window_days,
    r_bounds = excluded.r_bounds, f_bounds = excluded.f_bounds, m_bounds = excluded.m_bounds
"""

# `include (total)` on the time index: an index-only scan of the window.
_BASKET = """
select round(avg(total), 4) from segmentation_orders
where shop_id = $1 and ordered_at > $2::timestamptz - make_interval(days => $3)
  and ordered_at <= $2::timestamptz
"""

# Orders imported in bulk: the aggregates of the contacts concerned are rebuilt from the
# ledger, and their profiles' revisions bumped like an event's.
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
),
rebuilt as (
    insert into segmentation_contacts as c
        (shop_id, contact_key, orders_count, gross, refunded, first_order_at, last_order_at,
         last_order_total, updated_at)
    select $1, a.contact_key, coalesce(o.n, 0), coalesce(o.gross, 0),
           coalesce(r.refunded, 0), o.first_at, o.last_at, o.last_total, $2
    from affected a left join o using (contact_key) left join r using (contact_key)
    on conflict (shop_id, contact_key) do update set
        orders_count = excluded.orders_count, gross = excluded.gross,
        refunded = excluded.refunded, first_order_at = excluded.first_order_at,
        last_order_at = excluded.last_order_at, last_order_total = excluded.last_order_total,
        updated_at = excluded.updated_at
    returning c.id
)
update segmentation_profiles set revision = revision + 1
where contact_id in (select id from rebuilt)
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


@dataclass(frozen=True)
class _Locked:
    """A contact's row and profile, locked by this transaction, with the shop's bounds."""

    contact_id: int
    row: asyncpg.Record
    profile: ContactProfile | None
    profiled_at: datetime | None
    bounds: RfmBoundaries | None


def _recompute_lock(shop_id: str) -> str:
    return f"segmentation:recompute:{shop_id}"


def _status_count(status: str) -> int:
    return int(status.split()[-1])


def _past_tie(at: dict[int, Decimal], k: int, n: int) -> tuple[Decimal | None, Decimal | None]:
    """The boundary for `k` strictly worse values from the values at known sorted positions,
    or the tied value whose next better value is beyond them (then the boundary is None)."""
    if k >= n:
        return None, None
    v = at[k]
    if at[k - 1] != v:
        return v, None
    p = k + 1
    while p in at:
        if at[p] != v:
            return at[p], None
        p += 1
    return None, (None if p >= n else v)


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
        locked = await self._locked(conn, shop, key, row, now)
        before = _aggregate(shop, key, locked.row)
        sources = alias_sources(event)
        if sources:
            before = await self._absorb(conn, before, sources, now)
        after = apply(before, event, now)
        return await self._store(conn, locked, after, now, event)

    async def _locked(
        self, conn: Connection, shop: str, key: str, row: asyncpg.Record, now: datetime
    ) -> _Locked:
        bounds = _bounds(row)
        if row["id"] is None:
            created = await conn.fetchrow(_CREATE_CONTACT, shop, key, now)
            if created is not None:
                return _Locked(created["id"], created, None, None, bounds)
            # created by another transaction meanwhile: read (and lock) it
            again = await conn.fetchrow(_READ_PLAIN, shop, key)
            assert again is not None
            assert again["id"] is not None
            row = again
        return _Locked(row["id"], row, _profile(key, row), row["profiled_at"], bounds)

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
            "with contact as (delete from segmentation_contacts where id = any($1::bigint[]))"
            " delete from segmentation_profiles where contact_id = any($1::bigint[])",
            [r["id"] for r in rows],
        )
        return merged

    async def _store(
        self,
        conn: Connection,
        locked: _Locked,
        agg: ContactAggregate,
        now: datetime,
        cause: Event[Payload],
    ) -> list[SegmentChange]:
        after = profile_of(agg, locked.bounds, self._config, now)
        before, profiled_at = locked.profile, locked.profiled_at
        t = agg.traits
        contact = (
            locked.contact_id,
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
        )
        profile = (after.r, after.f, after.m, after.segment, after.stage, after.tier)
        first = before is None and await conn.fetchval(
            _WRITE_FIRST, *contact, *profile, now, agg.shop_id
        )
        if not first:
            if before is None:
                # a recompute gave this contact its first profile meanwhile: compare with it
                found = await conn.fetchrow(_LOCK_PROFILE, locked.contact_id)
                assert found is not None
                before, profiled_at = _profile(agg.contact_key, found), found["profiled_at"]
            changed = after != before
            await conn.execute(_WRITE, *contact, *profile, now if changed else profiled_at)
        if after == before:
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
        bounds, _, _ = await self._boundaries(conn, shop_id, now)
        return bounds

    async def _boundaries(
        self, conn: Connection, shop_id: str, now: datetime
    ) -> tuple[RfmBoundaries | None, int, int]:
        """The boundaries, the shop's contacts and its buyers. Recency and frequency come
        from how many buyers hold each value; monetary, nearly continuous, from a sort."""
        recency: list[tuple[int, int]] = []
        frequency: list[tuple[int, int]] = []
        contacts = 0
        for row in await conn.fetch(_HISTOGRAM, shop_id, now):
            if row["dim"] == 3:
                contacts = row["n"]
            elif row["value"] is not None:
                (recency if row["dim"] == 1 else frequency).append((row["value"], row["n"]))
        n = sum(count for _, count in frequency)
        if n == 0:
            return None, contacts, 0
        recency.sort(reverse=True)  # worst first: the most days since the last order
        frequency.sort()
        return (
            RfmBoundaries(
                recency_days=boundaries_from_counts(recency, n),
                frequency=boundaries_from_counts(frequency, n),
                monetary=await self._monetary_bounds(conn, shop_id, n),
                population=n,
            ),
            contacts,
            n,
        )

    async def _monetary_bounds(self, conn: Connection, shop_id: str, n: int) -> MonetaryBounds:
        """Per score the value at position `k` (worst first), unless it ties with the value
        at `k - 1`: then it has too few strictly worse values, and the boundary is the next
        strictly better value. One sort gives the values at `k - 1 .. k + _LOOK_AHEAD`; a tie
        longer than that costs one more scan."""
        needed = worse_needed(n)
        positions = sorted(
            {p for k in needed if k < n for p in range(k - 1, min(k + _LOOK_AHEAD, n - 1) + 1)}
        )
        if not positions:
            return None, None, None, None
        values = await conn.fetchval(_MONETARY_AT, shop_id, [(p + 0.5) / n for p in positions])
        at: dict[int, Decimal] = dict(zip(positions, values, strict=True))
        bounds: list[Decimal | None] = []
        unresolved: list[Decimal | None] = []
        for k in needed:
            found, past = _past_tie(at, k, n)
            bounds.append(found)
            unresolved.append(past)
        if any(v is not None for v in unresolved):
            better = await conn.fetchval(_MONETARY_BETTER, shop_id, *unresolved)
            bounds = [
                b if u is not None else v
                for v, b, u in zip(bounds, better, unresolved, strict=True)
            ]
        return bounds[0], bounds[1], bounds[2], bounds[3]

    async def recompute(
        self, conn: Connection, shop_id: str, now: datetime, *, side: Connection | None = None
    ) -> RecomputeResult:
        """Re-score every contact of the shop as of `now` (set-based), write the profiles
        that changed, stage their changes for `recompute_changes`, refresh shop figures.

        With `side` (a second connection, outside this transaction), the average basket is
        read there while this connection scores contacts; only when this transaction holds
        no uncommitted orders of the shop.
        """
        basket_read = (
            asyncio.ensure_future(self.average_basket(side, shop_id, now))
            if side is not None
            else None
        )
        try:
            return await self._recompute(conn, shop_id, now, basket_read)
        finally:
            if basket_read is not None and not basket_read.done():
                # this recompute failed: let the side read end before its connection is reused
                with contextlib.suppress(Exception):
                    await basket_read

    async def average_basket(self, conn: Connection, shop_id: str, now: datetime) -> Decimal | None:
        """Mean order value over the basket window ending at `now`."""
        basket: Decimal | None = await conn.fetchval(
            _BASKET, shop_id, now, self._basket_window_days
        )
        return basket

    async def _recompute(
        self,
        conn: Connection,
        shop_id: str,
        now: datetime,
        basket_read: asyncio.Future[Decimal | None] | None,
    ) -> RecomputeResult:
        # the sorts and hashes of one scan stay in memory (this transaction only)
        await conn.execute("set local work_mem = '256MB'")
        bounds, contacts, buyers = await self._boundaries(conn, shop_id, now)
        r_bounds: list[Any] = [None] * 4
        f_bounds: list[Any] = [None] * 4
        m_bounds: list[Any] = [None] * 4
        if bounds is not None:
            r_bounds = list(bounds.recency_days)
            f_bounds = list(bounds.frequency)
            m_bounds = list(bounds.monetary)
        c = self._config
        cut = Cutoffs.at(now, c)
        first = not await conn.fetchval(
            "select exists (select 1 from segmentation_shop_stats where shop_id = $1)", shop_id
        )
        await conn.execute("drop table if exists seg_recompute_diff")
        await conn.execute(
            _DIFF_FIRST if first else _DIFF,
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
            [now - timedelta(days=t + 1, microseconds=-1) for t in r_bounds if t is not None],
            [v for v in f_bounds if v is not None],
            [v for v in m_bounds if v is not None],
        )
        staged = await conn.fetchrow(_STAGED)
        assert staged is not None
        written = 0
        if staged["changed"]:
            written += _status_count(await conn.execute(_UPDATE_PROFILES, now))
        if staged["new"]:
            written += await self._insert_profiles(conn, shop_id, now)
        if staged["gone"]:
            await conn.execute(_DELETE_GONE)
        recorded = int(staged["changes"])
        if written < staged["changed"] + staged["new"]:
            await conn.execute(_FORGET_UNWRITTEN)
            recorded = int(
                await conn.fetchval(
                    f"select coalesce(sum({_CHANGES}), 0) from seg_recompute_diff where not gone"
                )
            )
        basket = (
            await self.average_basket(conn, shop_id, now)
            if basket_read is None
            else await basket_read
        )
        await conn.execute(
            _STATS,
            shop_id,
            now,
            buyers,
            contacts,
            basket,
            self._basket_window_days,
            r_bounds,
            f_bounds,
            m_bounds,
        )
        return RecomputeResult(
            contacts=contacts,
            customers=buyers,
            profiles_written=written,
            changes_recorded=recorded,
            average_basket=basket,
        )

    async def _insert_profiles(self, conn: Connection, shop_id: str, now: datetime) -> int:
        """First profiles: a plain insert, unless an event gave one of these contacts its
        first profile since the diff; then again, skipping those."""
        try:
            async with conn.transaction():
                return _status_count(await conn.execute(_INSERT_PROFILES, shop_id, now))
        except asyncpg.UniqueViolationError:
            status = await conn.execute(_INSERT_PROFILES + " on conflict do nothing", shop_id, now)
            return _status_count(status)

    async def recompute_changes(
        self, conn: Connection, shop_id: str, now: datetime, batch: int = 5000
    ) -> AsyncIterator[list[SegmentChange]]:
        """The changes the last `recompute` of this transaction staged, in batches."""
        cause = f"recompute:{now.isoformat()}"
        chunk: list[SegmentChange] = []
        async for row in conn.cursor(
            "select contact_key, old_stage, stage, old_tier, tier, old_segment, segment, r, f, m"
            " from seg_recompute_diff where not gone order by contact_id",
            prefetch=batch,
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

    async def shops_with_customers(self, conn: Connection, shops: Collection[str]) -> set[str]:
        rows = await conn.fetch(
            "select shop_id from segmentation_shop_stats"
            " where shop_id = any($1::text[]) and customers > 0",
            sorted(shops),
        )
        return {r["shop_id"] for r in rows}

    async def lock_recompute(self, conn: Connection, shop_id: str, *, wait: bool) -> bool:
        """A transaction-level advisory lock on the shop."""
        if wait:
            await conn.execute(
                "select pg_advisory_xact_lock(hashtext($1))", _recompute_lock(shop_id)
            )
            return True
        locked: bool = await conn.fetchval(
            "select pg_try_advisory_xact_lock(hashtext($1))", _recompute_lock(shop_id)
        )
        return locked

    # --- reads -------------------------------------------------------------------------

    async def contact(self, conn: Connection, shop_id: str, contact_key: str) -> ContactView | None:
        row = await conn.fetchrow(
            f"select {_CONTACT_COLUMNS}, {_PROFILE_COLUMNS} from segmentation_contacts c"
            " left join segmentation_profiles p on p.contact_id = c.id"
            " where c.shop_id = $1 and c.contact_key = $2",
            shop_id,
            contact_key,
        )
        if row is None:
            return None
        return ContactView(_aggregate(shop_id, contact_key, row), _profile(contact_key, row))

    async def summary(self, conn: Connection, shop_id: str) -> ShopSummary:
        rows = await conn.fetch(
            "select g.dim, g.name, count(*) as n from segmentation_profiles p"
            " cross join lateral (values ('stage', p.stage), ('tier', p.tier),"
            "   ('segment', p.segment)) as g(dim, name)"
            " where p.shop_id = $1 and g.name is not null group by g.dim, g.name",
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
            "       / 86400)::int as recency_days, p.r, p.f, p.m, p.segment"
            " from segmentation_contacts c join segmentation_profiles p on p.contact_id = c.id"
            " where c.shop_id = $1 and p.r is not null",
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
