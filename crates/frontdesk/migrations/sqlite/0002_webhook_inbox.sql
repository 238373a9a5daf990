-- The durable webhook inbox: every verified Clerk webhook is stored here before it is
-- acknowledged, keyed by its Svix message id (so redeliveries are not stored twice),
-- then applied by the workers. Times are Unix milliseconds.
CREATE TABLE webhook_inbox (
    id              TEXT    PRIMARY KEY,          -- svix-id / webhook-id
    type            TEXT    NOT NULL,             -- the event type, e.g. user.updated
    payload         TEXT    NOT NULL,             -- the body as received, byte for byte
    event_ts        INTEGER NOT NULL,             -- the envelope's timestamp (ms)
    received_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER NOT NULL DEFAULT 0,   -- a worker's lease on the row
    last_error      TEXT,
    done_at         INTEGER
);
CREATE INDEX webhook_inbox_due_idx ON webhook_inbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_inbox_state_idx ON webhook_inbox (state, received_at);
