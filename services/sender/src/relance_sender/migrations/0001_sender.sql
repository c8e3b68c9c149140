-- Send ledger: one row per message id; the row is claimed (`sending`) and committed before
-- the provider is called, so a crash after the provider accepted never leads to a silent resend.
CREATE TABLE sender_ledger (
    message_id          text PRIMARY KEY,
    shop_id             text NOT NULL,
    contact_key         text NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    purpose             text NOT NULL CHECK (purpose IN ('marketing', 'transactional')),
    plan                text,
    step                text,
    state               text NOT NULL
                        CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'ambiguous')),
    attempts            integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    first_attempt_at    timestamptz,
    next_attempt_at     timestamptz,
    owner               text,
    address             text,
    provider_message_id text,
    last_error          text,
    request             jsonb
);

CREATE INDEX sender_ledger_due ON sender_ledger (next_attempt_at) WHERE state = 'pending';
CREATE INDEX sender_ledger_sending ON sender_ledger (owner, updated_at) WHERE state = 'sending';
CREATE INDEX sender_ledger_address ON sender_ledger (shop_id, channel, address);

-- Addresses that must not receive anything: hard bounces, repeated bounces, provider opt-outs.
CREATE TABLE sender_suppressions (
    shop_id   text NOT NULL,
    channel   text NOT NULL CHECK (channel IN ('email', 'sms')),
    address   text NOT NULL,
    reason    text NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (shop_id, channel, address)
);

CREATE TABLE sender_soft_bounces (
    shop_id   text NOT NULL,
    channel   text NOT NULL,
    address   text NOT NULL,
    count     integer NOT NULL,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (shop_id, channel, address)
);

-- The latest consent per contact, channel and purpose, kept from contact.consent_changed.
CREATE TABLE sender_consents (
    shop_id     text NOT NULL,
    contact_key text NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    purpose     text NOT NULL CHECK (purpose IN ('marketing', 'transactional')),
    status      text NOT NULL CHECK (status IN ('granted', 'denied')),
    at          timestamptz NOT NULL,
    PRIMARY KEY (shop_id, contact_key, channel, purpose)
);
