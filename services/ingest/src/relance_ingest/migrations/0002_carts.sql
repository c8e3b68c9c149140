-- Per-cart item lists, so every cart.changed event carries the full list.
create table if not exists ingest_carts (
    shop_id text not null,
    cart_id text not null,
    contact_key text not null,
    items jsonb not null default '[]'::jsonb,
    currency text not null default 'EUR',
    is_open boolean not null default true,
    updated_at timestamptz not null default now(),
    primary key (shop_id, cart_id)
);
-- At most one open cart per contact is what "the contact's cart" means.
create index if not exists ingest_carts_contact on ingest_carts (shop_id, contact_key)
    where is_open;

-- Cart events already folded into a cart: a retried message must not add items twice.
create table if not exists ingest_cart_applied (
    shop_id text not null,
    event_id uuid not null,
    applied_at timestamptz not null default now(),
    primary key (shop_id, event_id)
);
