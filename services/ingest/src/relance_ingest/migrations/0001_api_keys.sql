-- API keys (write / admin), stored as SHA-256 digests of high-entropy random keys.
-- Several active keys per shop and kind allow rotation; revoked_at retires a key.
create table if not exists ingest_api_keys (
    key_hash text primary key,
    shop_id text not null,
    kind text not null check (kind in ('write', 'admin')),
    label text not null default '',
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
create index if not exists ingest_api_keys_shop on ingest_api_keys (shop_id, kind);
