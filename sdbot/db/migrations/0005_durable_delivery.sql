-- sdbot schema 5: durable delivery of results, and members' status messages across a restart.

-- 1 while a done job's images wait to be posted (they are in the results folder beside this file); 0 once
-- its result message is recorded, or its delivery was given up (the job is then failed and refunded).
ALTER TABLE jobs ADD COLUMN undelivered INTEGER NOT NULL DEFAULT 0 CHECK (undelivered IN (0, 1));
CREATE INDEX jobs_undelivered ON jobs (id) WHERE undelivered = 1;

-- The private status message of a job whose member is still following it, so that it can be edited after a
-- restart ("resumed", "posted", "refunded"). The token is a credential: a row is kept only while the token
-- is valid (Discord's 15 minutes) and until the job's status is final, and is deleted with the job.
CREATE TABLE status_messages (
    job_id         INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    application_id INTEGER NOT NULL,
    token          TEXT NOT NULL,
    message_id     INTEGER NOT NULL,
    expires_at     REAL NOT NULL
);
