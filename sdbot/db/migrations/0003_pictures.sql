-- sdbot schema 3: pictures that jobs start from live in files, new job kinds, and servers may refuse uploads.

-- Whether members may start /imagine from their own picture (NULL: the default, allowed).
ALTER TABLE guild_settings ADD COLUMN uploads_allowed INTEGER CHECK (uploads_allowed IN (0, 1));

-- Rebuild jobs: a job's source picture is a file in the data folder (source_file names it; see
-- sdbot/db/sources.py), and kind takes any of sdbot.params.JobKind, which checks it on every read, so a new
-- kind needs no table rebuild. source_png stays for jobs queued before this version, which still start from it.
-- The old table is renamed first, so that its self-reference and AUTOINCREMENT counter move with it and
-- dropping it deletes no parent link of the new one.
ALTER TABLE jobs RENAME TO jobs_v2;

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id       INTEGER NOT NULL,
    channel_id     INTEGER NOT NULL,
    user_id        INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind <> ''),
    parent_id      INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    params         TEXT NOT NULL CHECK (json_valid(params)),
    image_count    INTEGER NOT NULL CHECK (image_count > 0),
    state          TEXT NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    error          TEXT,
    seeds          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(seeds)),
    nsfw           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(nsfw)),
    message_id     INTEGER,
    reservation_id INTEGER,
    source_file    TEXT,
    source_png     BLOB,
    created_at     REAL NOT NULL,
    started_at     REAL,
    finished_at    REAL
);

-- In id order: a parent is always older than the jobs made from it.
INSERT INTO jobs (id, guild_id, channel_id, user_id, kind, parent_id, params, image_count, state, error, seeds,
                  nsfw, message_id, reservation_id, source_png, created_at, started_at, finished_at)
SELECT id, guild_id, channel_id, user_id, kind, parent_id, params, image_count, state, error, seeds, nsfw,
       message_id, reservation_id, source_png, created_at, started_at, finished_at
FROM jobs_v2 ORDER BY id;

-- Ids are never handed out twice: the new table continues the old one's counter.
DELETE FROM sqlite_sequence WHERE name = 'jobs';
UPDATE sqlite_sequence SET name = 'jobs' WHERE name = 'jobs_v2';

DROP TABLE jobs_v2;

CREATE INDEX jobs_unfinished ON jobs (id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_guild_created ON jobs (guild_id, created_at);
CREATE INDEX jobs_guild_user ON jobs (guild_id, user_id);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
