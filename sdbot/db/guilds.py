"""Per-server settings as stored: only what a server changed, plus its channel list and banned words.

A NULL column means "the default", so that changing ``SDBOT_DAILY_QUOTA`` (or a built-in default) reaches
every server that never set its own value. Defaults and validation live in ``sdbot.services.settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sdbot.db.gateway import Gateway

# Each stored scalar setting and the Python type it reads back as (booleans are stored as 0/1).
SCALAR_SETTINGS: Mapping[str, type] = MappingProxyType(
    {
        "nsfw_policy": str,
        "daily_quota": int,
        "managers_exempt": bool,
        "default_steps": int,
        "max_steps": int,
        "max_count": int,
        "max_pixels": int,
        "user_queue_limit": int,
        "upscale_allowed": bool,
    }
)


@dataclass(frozen=True)
class StoredGuildSettings:
    """What one server changed: ``values`` holds only the scalar settings it set."""

    values: Mapping[str, Any]
    channels: frozenset[int]
    banned_words: frozenset[str]


class GuildsRepository:
    """Reads and writes ``guild_settings``, ``guild_channels`` and ``banned_words``."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def get(self, guild_id: int) -> StoredGuildSettings:
        async with self._gateway.reading() as conn:
            async with conn.execute("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cursor:
                row = await cursor.fetchone()
            async with conn.execute(
                "SELECT channel_id FROM guild_channels WHERE guild_id = ?", (guild_id,)
            ) as cursor:
                channels = frozenset(r["channel_id"] for r in await cursor.fetchall())
            async with conn.execute(
                "SELECT word FROM banned_words WHERE guild_id = ?", (guild_id,)
            ) as cursor:
                words = frozenset(r["word"] for r in await cursor.fetchall())
        values = {}
        if row is not None:
            values = {
                name: kind(row[name]) for name, kind in SCALAR_SETTINGS.items() if row[name] is not None
            }
        return StoredGuildSettings(MappingProxyType(values), channels, words)

    async def set_value(self, guild_id: int, name: str, value: Any) -> None:
        """Store one scalar setting; ``None`` returns it to the default."""
        column = _column(name)
        await self._gateway.write(
            f"INSERT INTO guild_settings (guild_id, {column}) VALUES (?, ?) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {column} = excluded.{column}",
            (guild_id, value),
        )

    async def reset(self, guild_id: int) -> None:
        """Return every scalar setting to its default (channels and banned words stay)."""
        await self._gateway.write("DELETE FROM guild_settings WHERE guild_id = ?", (guild_id,))

    async def add_channel(self, guild_id: int, channel_id: int) -> bool:
        return (
            await self._gateway.write(
                "INSERT OR IGNORE INTO guild_channels (guild_id, channel_id) VALUES (?, ?)",
                (guild_id, channel_id),
            )
            == 1
        )

    async def remove_channel(self, guild_id: int, channel_id: int) -> bool:
        return (
            await self._gateway.write(
                "DELETE FROM guild_channels WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
            )
            == 1
        )

    async def add_banned_word(self, guild_id: int, word: str) -> bool:
        return (
            await self._gateway.write(
                "INSERT OR IGNORE INTO banned_words (guild_id, word) VALUES (?, ?)", (guild_id, word)
            )
            == 1
        )

    async def remove_banned_word(self, guild_id: int, word: str) -> bool:
        return (
            await self._gateway.write(
                "DELETE FROM banned_words WHERE guild_id = ? AND word = ?", (guild_id, word)
            )
            == 1
        )


def _column(name: str) -> str:
    """The column for a setting name; names never reach SQL unless they are one of ours."""
    if name not in SCALAR_SETTINGS:
        raise KeyError(f"no stored setting named {name!r}")
    return name
