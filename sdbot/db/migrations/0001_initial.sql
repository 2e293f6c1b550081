-- sdbot schema 1: server settings, member overrides, the quota ledger, jobs and a small key/value table.
-- Times are REAL seconds since the epoch. Discord ids are INTEGER (snowflakes fit in 64 bits).

-- One row per server that changed a setting; NULL means "use the default" (SDBOT_* or the built-in one).
CREATE TABLE guild_settings (
    guild_id         INTEGER PRIMARY KEY,
    nsfw_policy      TEXT CHECK (nsfw_policy IN ('block', 'spoiler', 'allow')),
    daily_quota      INTEGER,
    managers_exempt  INTEGER CHECK (managers_exempt IN (0, 1)),
    default_steps    INTEGER,
    max_steps        INTEGER,
    max_count        INTEGER,
    max_pixels       INTEGER,
    user_queue_limit INTEGER,
    upscale_allowed  INTEGER CHECK (upscale_allowed IN (0, 1))
);

-- Channels where the bot may be used; no row for a server means every channel.
CREATE TABLE guild_channels (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
) WITHOUT ROWID;

-- Banned words or phrases, stored lower-case.
CREATE TABLE banned_words (
    guild_id INTEGER NOT NULL,
    word     TEXT NOT NULL,
    PRIMARY KEY (guild_id, word)
) WITHOUT ROWID;

-- Per-member rules; a member with neither an override nor a block has no row.
CREATE TABLE member_overrides (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    quota    INTEGER,
    blocked  INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
    PRIMARY KEY (guild_id, user_id)
) WITHOUT ROWID;

-- The quota ledger: one row per reservation. AUTOINCREMENT so that a pruned id is never handed out again
-- (jobs keep their reservation id across restarts).
CREATE TABLE usage (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    images     INTEGER NOT NULL CHECK (images > 0),
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),
    created_at REAL NOT NULL
);
-- Covers the rolling-window query entirely: its cost depends on the rows inside the window, not on history.
CREATE INDEX usage_window ON usage (guild_id, user_id, created_at, state, images);
-- Lets pruning find old rows without a scan.
CREATE INDEX usage_created ON usage (created_at);

-- Every job ever queued. AUTOINCREMENT so that a result button never points at a different, later job.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id       INTEGER NOT NULL,
    channel_id     INTEGER NOT NULL,
    user_id        INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('txt2img', 'reroll', 'variation', 'upscale')),
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
    source_png     BLOB,
    created_at     REAL NOT NULL,
    started_at     REAL,
    finished_at    REAL
);
CREATE INDEX jobs_unfinished ON jobs (id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_guild_created ON jobs (guild_id, created_at);
CREATE INDEX jobs_guild_user ON jobs (guild_id, user_id);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- Small facts about the bot itself (e.g. the hash of the last synced command set).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
