-- Scored profiles move out of the wide contact row into a narrow table keyed by an integer.
-- The first recompute after a bulk load scores every contact: it now inserts narrow rows
-- instead of rewriting every contact (traits, consent and carts copied into a new heap
-- tuple, most of them off-page, each with a new index entry, all of it in the WAL).
alter table segmentation_contacts add column id bigint generated always as identity;
create unique index segmentation_contacts_id on segmentation_contacts (id);

-- revision: bumped by every event applied to the contact (and by bulk imports). A recompute
-- writes a profile only while its revision is the one the recompute read, so a contact an
-- event touched meanwhile keeps the event's profile until the next recompute.
-- stage is never null: a contact without a row has never been profiled.
create table segmentation_profiles (
    contact_id  bigint      primary key,
    shop_id     text        not null,
    revision    bigint      not null,
    r           smallint,
    f           smallint,
    m           smallint,
    segment     text,
    stage       text        not null,
    tier        text,
    profiled_at timestamptz not null
) with (fillfactor = 90);

insert into segmentation_profiles
    (contact_id, shop_id, revision, r, f, m, segment, stage, tier, profiled_at)
select id, shop_id, 0, r, f, m, segment, stage, tier, coalesce(profiled_at, updated_at)
from segmentation_contacts
where stage is not null;

alter table segmentation_contacts
    drop column r, drop column f, drop column m, drop column segment, drop column stage,
    drop column tier, drop column profiled_at;
