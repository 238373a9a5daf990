-- Revoked sessions, shared by every instance: a `session.revoked` (or `ended`,
-- `removed`) webhook stores the session id here before its effect counts as applied,
-- so every instance loads it at start and refuses the session's tokens until `until_ms`
-- (Unix ms). Expired rows are purged.
CREATE TABLE session_revocations (
    sid        TEXT    PRIMARY KEY,
    until_ms   INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);
CREATE INDEX session_revocations_until_idx ON session_revocations (until_ms);

-- Fencing of webhook workers: every claim increments `claim` (never reset, not even
-- by a replay) and the worker's done/retry/dead apply only while the row still
-- carries its claim, so a worker whose lease ran out cannot finish a row another
-- worker has taken since.
ALTER TABLE webhook_inbox ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
