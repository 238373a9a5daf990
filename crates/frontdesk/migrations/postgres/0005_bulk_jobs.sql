-- Bulk jobs (POST /v1/users/bulk/metadata): a job and its items, stored before the
-- 202 so a job survives a restart. Any instance runs a job under a lease
-- (locked_until, with claim as its fencing token), like the webhook inbox; an item
-- moves from pending to ok or failed once. Times are Unix milliseconds.
CREATE TABLE bulk_jobs (
    id           TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,                 -- user_metadata
    state        TEXT    NOT NULL DEFAULT 'running'
                         CHECK (state IN ('running', 'done')),
    total        INTEGER NOT NULL,
    created_at   BIGINT  NOT NULL,
    finished_at  BIGINT,
    locked_until BIGINT  NOT NULL DEFAULT 0,
    claim        BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX bulk_jobs_running_idx ON bulk_jobs (created_at) WHERE state = 'running';

CREATE TABLE bulk_job_items (
    job_id     TEXT    NOT NULL REFERENCES bulk_jobs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,                   -- the item's place in the request
    user_id    TEXT    NOT NULL,
    body       TEXT    NOT NULL,                   -- the metadata update, as JSON
    state      TEXT    NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'ok', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    status     INTEGER,                            -- Clerk's HTTP status, when it answered
    error_code TEXT,                               -- Clerk's error code (or ours)
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX bulk_job_items_pending_idx ON bulk_job_items (job_id, seq) WHERE state = 'pending';
