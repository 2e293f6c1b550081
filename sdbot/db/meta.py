"""Small facts about the bot itself, such as the hash of the command set it last synced with Discord."""

from __future__ import annotations

from sdbot.db.gateway import Gateway


class MetaRepository:
    """A string key/value table."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def get(self, key: str) -> str | None:
        row = await self._gateway.fetch_one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]

    async def set(self, key: str, value: str) -> None:
        await self._gateway.write(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
