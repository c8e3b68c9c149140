-- Per-contact orchestrator state (facts + plan instances) and its durable timers.
-- One writer per contact: every change to a contact's state or timers happens in a
-- transaction holding that contact's row lock (SELECT ... FOR UPDATE).

CREATE TABLE orchestrator_contacts (
    shop_id     text        NOT NULL,
    contact_key text        NOT NULL,
    state       jsonb       NOT NULL,
    version     bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, contact_key)
);

CREATE TABLE orchestrator_timers (
    shop_id     text        NOT NULL,
    contact_key text        NOT NULL,
    timer_key   text        NOT NULL,
    due_at      timestamptz NOT NULL,
    PRIMARY KEY (shop_id, contact_key, timer_key)
);
CREATE INDEX orchestrator_timers_due ON orchestrator_timers (due_at);

-- What the engine decided, for /v1/plans/stats and audits: requested messages,
-- holds/drops/skips, finished instances and attributed orders.
CREATE TABLE orchestrator_journal (
    id            bigserial   PRIMARY KEY,
    shop_id       text        NOT NULL,
    contact_key   text        NOT NULL,
    kind          text        NOT NULL,
    plan          text        NOT NULL,
    step          text,
    plan_instance text,
    message_id    text,
    reason        text,
    amount        numeric(18, 4),
    at            timestamptz NOT NULL
);
CREATE INDEX orchestrator_journal_plan ON orchestrator_journal (shop_id, plan, step, kind);
CREATE UNIQUE INDEX orchestrator_journal_request
    ON orchestrator_journal (shop_id, message_id) WHERE kind = 'requested';
