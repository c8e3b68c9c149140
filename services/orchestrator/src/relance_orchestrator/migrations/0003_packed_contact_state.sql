-- Contact states as MessagePack (see adapters/state_codec.py) in `packed`. A state is read
-- and rewritten whole on every decision; jsonb parsing, output and TOAST compression of a
-- 3-6 KB state were most of PostgreSQL's work per timer firing. Rows written before keep
-- their jsonb `state` until their next change, which writes `packed` and clears `state`.
ALTER TABLE orchestrator_contacts
    ADD COLUMN packed bytea,
    ALTER COLUMN state DROP NOT NULL,
    ADD CONSTRAINT orchestrator_contacts_has_state CHECK (packed IS NOT NULL OR state IS NOT NULL);
-- Rows up to a page stay inline and uncompressed: a typical packed state is 1-4 KB, and
-- compressing it on every write cost more than the space it saves.
ALTER TABLE orchestrator_contacts SET (toast_tuple_target = 8160);
ALTER TABLE orchestrator_contacts ALTER COLUMN packed SET STORAGE EXTERNAL;

-- The same index as orchestrator_journal_request (unique, same columns, same predicate):
-- every requested message paid for both.
DROP INDEX orchestrator_journal_by_message;
