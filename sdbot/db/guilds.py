"""Per-server settings as stored: only what a server changed, plus its lists (allowed channels, banned words,
allowed models, allowed LoRAs).

A NULL column means "the default", so that changing ``SDBOT_DAILY_QUOTA`` (or a built-in default) reaches
every server that never set its own value. Defaults and validation live in ``sdbot.services.settings_schema``.
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
        "default_model": str,
        "uploads_allowed": bool,
        "loras_enabled": bool,
        "default_sampler": str,
    }
)
# Each list setting: its table and value column. An empty list means "no restriction" (channels, models,
# LoRAs).
LIST_SETTINGS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "channels": ("guild_channels", "channel_id"),
        "banned_words": ("banned_words", "word"),
        "models": ("guild_models", "model"),
        "loras": ("guild_loras", "lora"),
    }
)


@dataclass(frozen=True)
class StoredGuildSettings:
    """What one server changed: ``values`` holds only the scalar settings it set, ``lists`` every list
    setting (empty where it has none)."""

    values: Mapping[str, Any]
    lists: Mapping[str, frozenset[Any]]


class GuildsRepository:
    """Reads and writes ``guild_settings`` and the list tables (``LIST_SETTINGS``)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def get(self, guild_id: int) -> StoredGuildSettings:
        lists = {}
        async with self._gateway.reading() as conn:
            async with conn.execute("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cursor:
                row = await cursor.fetchone()
            for name, (table, column) in LIST_SETTINGS.items():
                async with conn.execute(
                    f"SELECT {column} FROM {table} WHERE guild_id = ?", (guild_id,)
                ) as cursor:
                    lists[name] = frozenset(r[column] for r in await cursor.fetchall())
        values = {}
        if row is not None:
            values = {
                name: kind(row[name]) for name, kind in SCALAR_SETTINGS.items() if row[name] is not None
            }
        return StoredGuildSettings(MappingProxyType(values), MappingProxyType(lists))

    async def set_value(self, guild_id: int, name: str, value: Any) -> None:
        """Store one scalar setting; ``None`` returns it to the default."""
        column = _column(name)
        await self._gateway.write(
            f"INSERT INTO guild_settings (guild_id, {column}) VALUES (?, ?) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {column} = excluded.{column}",
            (guild_id, value),
        )

    async def reset(self, guild_id: int) -> None:
        """Return every scalar setting to its default (the lists stay)."""
        await self._gateway.write("DELETE FROM guild_settings WHERE guild_id = ?", (guild_id,))

    async def add_to_list(self, guild_id: int, name: str, value: Any) -> bool:
        """Add ``value`` to a list setting; False if it was there already."""
        table, column = _list_table(name)
        return (
            await self._gateway.write(
                f"INSERT OR IGNORE INTO {table} (guild_id, {column}) VALUES (?, ?)", (guild_id, value)
            )
            == 1
        )

    async def remove_from_list(self, guild_id: int, name: str, value: Any) -> bool:
        """Remove ``value`` from a list setting; False if it was not there."""
        table, column = _list_table(name)
        return (
            await self._gateway.write(
                f"DELETE FROM {table} WHERE guild_id = ? AND {column} = ?", (guild_id, value)
            )
            == 1
        )


def _list_table(name: str) -> tuple[str, str]:
    """The table and column of a list setting; names never reach SQL unless they are one of ours."""
    if name not in LIST_SETTINGS:
        raise KeyError(f"no stored list named {name!r}")
    return LIST_SETTINGS[name]


def _column(name: str) -> str:
    """The column for a setting name; names never reach SQL unless they are one of ours."""
    if name not in SCALAR_SETTINGS:
        raise KeyError(f"no stored setting named {name!r}")
    return name
