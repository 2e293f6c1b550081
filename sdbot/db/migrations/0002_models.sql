-- sdbot schema 2: the model library. A server may choose its default model (NULL: the library's default)
-- and limit its members to some models of the library (no row for a server: every model).

ALTER TABLE guild_settings ADD COLUMN default_model TEXT;

CREATE TABLE guild_models (
    guild_id INTEGER NOT NULL,
    model    TEXT NOT NULL,
    PRIMARY KEY (guild_id, model)
) WITHOUT ROWID;
