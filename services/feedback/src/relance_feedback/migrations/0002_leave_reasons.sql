-- Leave reasons: why a contact stopped buying, one per anti-churn message (the latest
-- confirmed click wins; `revision` counts the changes). Only recorded: a reason never
-- unsubscribes anyone. The reason list is LEAVE_REASONS in relance_events.payloads.

CREATE TABLE feedback_leave_reasons (
    shop_id        text        NOT NULL,
    message_id     text        NOT NULL,
    reason_id      uuid        NOT NULL UNIQUE,
    contact_key    text        NOT NULL,
    plan           text        NOT NULL,
    step           text        NOT NULL,
    reason         text        NOT NULL CHECK (reason IN ('too_expensive', 'found_elsewhere',
                       'no_longer_needed', 'bad_experience', 'too_many_emails', 'other')),
    comment        text CHECK (char_length(comment) <= 4000),
    first_given_at timestamptz NOT NULL,
    given_at       timestamptz NOT NULL,
    revision       integer     NOT NULL CHECK (revision >= 1),
    PRIMARY KEY (shop_id, message_id)
);
CREATE INDEX feedback_leave_reasons_by_time ON feedback_leave_reasons (shop_id, given_at);
CREATE INDEX feedback_leave_reasons_by_contact ON feedback_leave_reasons (shop_id, contact_key);
