-- Dead letters replayed by `relance dlq replay`, so that none is replayed twice. Keyed by the
-- dead letter's own place in the DLQ topic. `published` is false when an earlier replay of the
-- same source record already reached every consumer group of that topic (one poison record
-- is dead-lettered once per group that read it; one replay serves them all).
CREATE TABLE runtime_dlq_replays (
    dlq_topic        text        NOT NULL,
    dlq_partition    int         NOT NULL,
    dlq_offset       bigint      NOT NULL,
    source_topic     text        NOT NULL,
    source_partition int         NOT NULL,
    source_offset    bigint      NOT NULL,
    consumer_group   text        NOT NULL,
    published        boolean     NOT NULL,
    replayed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX runtime_dlq_replays_source
    ON runtime_dlq_replays (source_topic, source_partition, source_offset);
