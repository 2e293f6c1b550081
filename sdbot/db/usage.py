"""The quota ledger: one row per reservation of images, reserved -> committed or refunded.

The check and the insert of a reservation happen in one ``BEGIN IMMEDIATE`` transaction, so two
connections (or two bot processes) can never both take the last image. Only rows inside the window are
read, through a covering index, so a check costs the same however long the history is; ``prune`` deletes
the rows that left the window, in short batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from sdbot.db.gateway import Gateway

PRUNE_BATCH = 2000  # rows per transaction: each batch holds the write lock for tens of milliseconds


@dataclass(frozen=True)
class UsageWindow:
    """A member's counted images inside the window: committed (used) and still reserved."""

    used: int
    reserved: int
    oldest_at: float | None  # creation time of the oldest counted row


@dataclass(frozen=True)
class ReserveOutcome:
    """The reservation made, or (when it would pass the limit) None and the window that refused it."""

    reservation_id: int | None
    refused_by: UsageWindow | None = None


# Inserts the reservation only if the member's counted images plus this request stay within the limit
# (NULL: no limit). One statement is one transaction, and SQLite takes the write lock as the statement
# starts, so no other connection can slip a reservation in between the check and the insert.
_RESERVE_WITHIN_LIMIT = """
INSERT INTO usage (guild_id, user_id, images, state, created_at)
SELECT :guild_id, :user_id, :images, 'reserved', :now
WHERE :limit IS NULL OR :images + (
    SELECT COALESCE(SUM(images), 0) FROM usage
    WHERE guild_id = :guild_id AND user_id = :user_id AND created_at > :since AND state != 'refunded'
) <= :limit
RETURNING id
"""


class UsageRepository:
    """Reads and writes the ``usage`` table."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def window(self, guild_id: int, user_id: int, since: float) -> UsageWindow:
        """Counted rows created after ``since``."""
        async with self._gateway.reading() as conn:
            return await _window(conn, guild_id, user_id, since)

    async def reserve(
        self, guild_id: int, user_id: int, images: int, *, limit: int | None, since: float, now: float
    ) -> ReserveOutcome:
        """Record a reservation unless used + reserved + images would pass ``limit`` (None: no limit)."""
        params = {
            "guild_id": guild_id,
            "user_id": user_id,
            "images": images,
            "limit": limit,
            "since": since,
            "now": now,
        }
        row = await self._gateway.fetch_one(_RESERVE_WITHIN_LIMIT, params)
        if row is not None:
            return ReserveOutcome(row["id"])
        # Refused: check again and read the window in one write transaction, so that the figures the
        # member is shown are the ones that refused them (or the reservation fits by now and is made).
        async with self._gateway.transaction() as conn:
            rows = await conn.execute_fetchall(_RESERVE_WITHIN_LIMIT, params)
            if rows:
                return ReserveOutcome(rows[0]["id"])
            return ReserveOutcome(None, await _window(conn, guild_id, user_id, since))

    async def commit(self, reservation_id: int, images: int | None = None) -> bool:
        """Count a reservation as used; ``images`` below the reserved number gives the rest back."""
        changed = await self._gateway.write(
            "UPDATE usage SET state = 'committed', images = MIN(images, COALESCE(?, images)) "
            "WHERE id = ? AND state = 'reserved'",
            (images, reservation_id),
        )
        return changed == 1

    async def refund(self, reservation_id: int) -> bool:
        """Give a reservation back. False if it was already committed, refunded or pruned."""
        changed = await self._gateway.write(
            "UPDATE usage SET state = 'refunded' WHERE id = ? AND state = 'reserved'", (reservation_id,)
        )
        return changed == 1

    async def prune(self, before: float) -> int:
        """Delete every row created at or before ``before``, in short transactions that let others write."""
        total = 0
        while True:
            deleted = await self._gateway.write(
                "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE created_at <= ? LIMIT ?)",
                (before, PRUNE_BATCH),
            )
            total += deleted
            if deleted < PRUNE_BATCH:
                return total


async def delete_user_usage(conn: aiosqlite.Connection, guild_id: int, user_id: int) -> int:
    """Delete a member's ledger rows in a server, inside the caller's transaction."""
    async with conn.execute(
        "DELETE FROM usage WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    ) as cursor:
        return cursor.rowcount


async def _window(conn: aiosqlite.Connection, guild_id: int, user_id: int, since: float) -> UsageWindow:
    rows = await conn.execute_fetchall(
        "SELECT COALESCE(SUM(CASE WHEN state = 'committed' THEN images END), 0) AS used, "
        "COALESCE(SUM(CASE WHEN state = 'reserved' THEN images END), 0) AS reserved, "
        "MIN(created_at) AS oldest_at "
        "FROM usage WHERE guild_id = ? AND user_id = ? AND created_at > ? AND state != 'refunded'",
        (guild_id, user_id, since),
    )
    (row,) = rows
    return UsageWindow(used=row["used"], reserved=row["reserved"], oldest_at=row["oldest_at"])


async def settle_reservation(
    conn: aiosqlite.Connection, reservation_id: int, state: str, from_states: tuple[str, ...] = ("reserved",)
) -> bool:
    """Move a reservation to ``state`` (committed or refunded), inside the caller's transaction. False if it
    was in none of ``from_states`` (already settled, or pruned)."""
    placeholders = ", ".join("?" for _ in from_states)
    async with conn.execute(
        f"UPDATE usage SET state = ? WHERE id = ? AND state IN ({placeholders})",
        (state, reservation_id, *from_states),
    ) as cursor:
        return cursor.rowcount == 1
