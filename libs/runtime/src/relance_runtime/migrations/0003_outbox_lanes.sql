-- The outbox relay publishes one topic (lane) at a time, each under its own lock: it reads a
-- lane's rows in id order, and finds the lanes with rows by a skip scan of this index.
CREATE INDEX runtime_outbox_topic_id ON runtime_outbox (topic, id);
