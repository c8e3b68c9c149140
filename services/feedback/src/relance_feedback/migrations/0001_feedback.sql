-- Feedback: survey answers, what we know of contacts and orders for alerts, support alerts
-- with their delivery state, and the support endpoint's disabled flag. Events produced here
-- (`survey.answered`) go through the platform outbox (runtime migrations).

CREATE TABLE feedback_contacts (
    shop_id     text        NOT NULL,
    contact_key text        NOT NULL,
    first_name  text,
    last_name   text,
    email       text,
    phone       text,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (shop_id, contact_key)
);

CREATE TABLE feedback_orders (
    shop_id     text          NOT NULL,
    order_id    text          NOT NULL,
    contact_key text          NOT NULL,
    ordered_at  timestamptz   NOT NULL,
    total       numeric(18,4) NOT NULL,
    currency    text          NOT NULL,
    items       jsonb         NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (shop_id, order_id)
);

CREATE TABLE feedback_answers (
    shop_id           text        NOT NULL,
    order_id          text        NOT NULL,
    contact_key       text        NOT NULL,
    answer_id         uuid        NOT NULL UNIQUE,
    choice            text CHECK (choice IN ('very_satisfied', 'satisfied', 'not_satisfied')),
    nps               smallint CHECK (nps BETWEEN 0 AND 10),
    comment           text CHECK (char_length(comment) <= 4000),
    origin            text        NOT NULL CHECK (origin IN ('email', 'api')),
    message_id        text,
    first_answered_at timestamptz NOT NULL,
    answered_at       timestamptz NOT NULL,
    revision          integer     NOT NULL CHECK (revision >= 1),
    alerted           boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (shop_id, order_id, contact_key),
    CHECK (choice IS NOT NULL OR nps IS NOT NULL)
);
CREATE INDEX feedback_answers_by_time ON feedback_answers (shop_id, answered_at);

CREATE TABLE feedback_endpoints (
    shop_id         text        NOT NULL,
    url             text        NOT NULL,
    disabled_at     timestamptz,
    disabled_reason text,
    PRIMARY KEY (shop_id, url)
);

CREATE TABLE feedback_alerts (
    alert_id        uuid        PRIMARY KEY,
    shop_id         text        NOT NULL,
    answer_id       uuid        NOT NULL,
    order_id        text        NOT NULL,
    contact_key     text        NOT NULL,
    webhook_id      text        NOT NULL,
    url             text        NOT NULL,
    body            bytea       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    finished_at     timestamptz,
    UNIQUE (shop_id, webhook_id)
);
CREATE INDEX feedback_alerts_due ON feedback_alerts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX feedback_alerts_by_time ON feedback_alerts (shop_id, created_at);

CREATE TABLE feedback_alert_attempts (
    shop_id     text        NOT NULL,
    alert_id    uuid        NOT NULL REFERENCES feedback_alerts (alert_id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    status      integer,
    error       text,
    duration_ms integer     NOT NULL,
    PRIMARY KEY (alert_id, attempt)
);
