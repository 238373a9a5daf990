-- Whether the user's primary email is verified in Clerk (verification.status ==
-- "verified"). Decisions made by email (linking a waiting profile, a role override)
-- are taken only from a verified one. Existing rows count as unverified until Clerk's
-- next update of the user says otherwise.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
