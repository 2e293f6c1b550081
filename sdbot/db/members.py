"""Per-member rules in a server: a personal daily quota and a block. Members without either have no row."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from sdbot.db.gateway import Gateway


@dataclass(frozen=True)
class MemberOverride:
    """A member's own rules; ``quota`` None means the server's quota applies."""

    quota: int | None = None
    blocked: bool = False


class MembersRepository:
    """Reads and writes ``member_overrides``."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def get(self, guild_id: int, user_id: int) -> MemberOverride:
        row = await self._gateway.fetch_one(
            "SELECT quota, blocked FROM member_overrides WHERE guild_id = ? AND user_id = ?",
            (guild_id, user_id),
        )
        return MemberOverride() if row is None else MemberOverride(row["quota"], bool(row["blocked"]))

    async def set_quota(self, guild_id: int, user_id: int, quota: int | None) -> None:
        await self._update(guild_id, user_id, "quota", quota)

    async def set_blocked(self, guild_id: int, user_id: int, blocked: bool) -> None:
        await self._update(guild_id, user_id, "blocked", int(blocked))

    async def _update(self, guild_id: int, user_id: int, column: str, value: int | None) -> None:
        async with self._gateway.transaction() as conn:
            await conn.execute(
                f"INSERT INTO member_overrides (guild_id, user_id, {column}) VALUES (?, ?, ?) "
                f"ON CONFLICT (guild_id, user_id) DO UPDATE SET {column} = excluded.{column}",
                (guild_id, user_id, value),
            )
            await conn.execute(
                "DELETE FROM member_overrides "
                "WHERE guild_id = ? AND user_id = ? AND quota IS NULL AND blocked = 0",
                (guild_id, user_id),
            )


async def delete_user_overrides(conn: aiosqlite.Connection, guild_id: int, user_id: int) -> int:
    """Delete a member's overrides in a server, inside the caller's transaction."""
    async with conn.execute(
        "DELETE FROM member_overrides WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    ) as cursor:
        return cursor.rowcount
