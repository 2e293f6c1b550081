-- sdbot schema 4: LoRAs and samplers. A server may switch LoRAs off (loras_enabled 0; NULL: on), limit its
-- members to some LoRAs (no row for a server: every LoRA) and choose a default sampler (NULL: each model's).

ALTER TABLE guild_settings ADD COLUMN loras_enabled INTEGER;
ALTER TABLE guild_settings ADD COLUMN default_sampler TEXT;

CREATE TABLE guild_loras (
    guild_id INTEGER NOT NULL,
    lora     TEXT NOT NULL,
    PRIMARY KEY (guild_id, lora)
) WITHOUT ROWID;
