-- Local users mirrored from Clerk, and the app's profile rows (one per user).
-- Times are Unix milliseconds, as in Clerk's own API, so both stores agree.
CREATE TABLE users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    clerk_id         TEXT    NOT NULL UNIQUE,
    email            TEXT,
    name             TEXT,
    image_url        TEXT,
    role             TEXT    NOT NULL DEFAULT 'user',
    clerk_updated_at INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    deleted_at       INTEGER
);
CREATE INDEX users_email_idx ON users (lower(email));

CREATE TABLE profiles (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Nullable: a profile prepared ahead of time for an email waits here to be linked.
    user_id      INTEGER UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    email        TEXT,
    display_name TEXT,
    data         TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX profiles_unlinked_email_idx ON profiles (lower(email)) WHERE user_id IS NULL;
