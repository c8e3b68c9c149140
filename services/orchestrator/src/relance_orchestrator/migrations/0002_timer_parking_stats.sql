-- Poison timers: a timer whose firing keeps failing is retried with a backoff, then parked
-- after `max_attempts` so it never blocks the others; rescheduling it (a new due time from a
-- successful decision) makes it pending again.
ALTER TABLE orchestrator_timers
    ADD COLUMN state      text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'parked')),
    ADD COLUMN attempts   integer     NOT NULL DEFAULT 0,
    ADD COLUMN retry_at   timestamptz,
    ADD COLUMN last_error text;
DROP INDEX orchestrator_timers_due;
CREATE INDEX orchestrator_timers_due ON orchestrator_timers (due_at) WHERE state = 'pending';

-- Message status and engagement by message id (one row per message and kind) for stats.
CREATE UNIQUE INDEX orchestrator_journal_message_kind
    ON orchestrator_journal (shop_id, message_id, kind)
    WHERE kind IN ('sent', 'opened', 'clicked');
CREATE INDEX orchestrator_journal_by_message
    ON orchestrator_journal (shop_id, message_id) WHERE kind = 'requested';

-- Orders the orchestrator has seen: the average basket when segmentation has none.
CREATE TABLE orchestrator_orders (
    shop_id    text           NOT NULL,
    order_id   text           NOT NULL,
    total      numeric(18, 4) NOT NULL,
    ordered_at timestamptz    NOT NULL,
    PRIMARY KEY (shop_id, order_id)
);
CREATE INDEX orchestrator_orders_by_time ON orchestrator_orders (shop_id, ordered_at)
    INCLUDE (total);
