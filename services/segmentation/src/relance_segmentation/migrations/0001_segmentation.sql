-- Segmentation: per-contact aggregates with their scored profile (one row, one write per
-- event), the order and refund ledger (distinctness, alias merges, average basket) and
-- shop-wide figures. Change events go through the runtime's outbox.

-- stage null: never profiled yet. fillfactor leaves room for HOT updates: no index
-- covers a column that events or recomputes rewrite.
create table segmentation_contacts (
    shop_id             text        not null,
    contact_key         text        not null,
    traits              jsonb       not null default '{}',
    consent             jsonb       not null default '{}',
    orders_count        integer     not null default 0,
    gross               numeric     not null default 0,
    refunded            numeric     not null default 0,
    first_order_at      timestamptz,
    last_order_at       timestamptz,
    last_order_total    numeric,
    open_carts          jsonb       not null default '{}',
    last_email_open_at  timestamptz,
    last_email_click_at timestamptz,
    birthday            date,
    signup_at           timestamptz,
    updated_at          timestamptz not null,
    r                   smallint,
    f                   smallint,
    m                   smallint,
    segment             text,
    stage               text,
    tier                text,
    profiled_at         timestamptz,
    primary key (shop_id, contact_key)
) with (fillfactor = 80);

create table segmentation_orders (
    shop_id     text        not null,
    order_id    text        not null,
    contact_key text        not null,
    ordered_at  timestamptz not null,
    total       numeric     not null,
    primary key (shop_id, order_id)
);
-- `include (total)`: the average basket is an index-only scan of its window
create index segmentation_orders_by_time on segmentation_orders (shop_id, ordered_at)
    include (total);
create index segmentation_orders_by_contact on segmentation_orders (shop_id, contact_key);

-- refund_id: the event id of an order.refunded, or the refund's own number in a file
create table segmentation_refunds (
    shop_id     text        not null,
    refund_id   text        not null,
    order_id    text,
    contact_key text        not null,
    refunded_at timestamptz not null,
    amount      numeric     not null,
    primary key (shop_id, refund_id)
);
create index segmentation_refunds_by_contact on segmentation_refunds (shop_id, contact_key);

create table segmentation_shop_stats (
    shop_id            text        not null primary key,
    as_of              timestamptz not null,
    customers          integer     not null,
    contacts           integer     not null,
    average_basket     numeric,
    basket_window_days integer     not null,
    r_bounds           integer[]   not null,
    f_bounds           integer[]   not null,
    m_bounds           numeric[]   not null
);
