"""Members' private status messages, kept so that they can be edited after a restart.

Editing a member's ephemeral status message needs the interaction's token, a credential that lets whoever
holds it post and edit as the bot in that channel for 15 minutes. A row is therefore kept only while its
token is valid and its job's status is not final: it is deleted once the status is final, expired rows are
never read and are pruned, and the token is kept out of reprs (and so out of logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiosqlite

from sdbot.db.gateway import Gateway

_COLUMNS = "job_id, application_id, token, message_id, expires_at"


@dataclass(frozen=True)
class StatusMessage:
    """Where a job's status message is and how long it can be edited."""

    job_id: int
    application_id: int
    token: str = field(repr=False)
    message_id: int
    expires_at: float


def _status(row: aiosqlite.Row) -> StatusMessage:
    return StatusMessage(
        row["job_id"], row["application_id"], row["token"], row["message_id"], row["expires_at"]
    )


class StatusMessagesRepository:
    """Reads and writes the ``status_messages`` table."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def save(self, status: StatusMessage) -> None:
        await self._gateway.write(
            f"INSERT OR REPLACE INTO status_messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (status.job_id, status.application_id, status.token, status.message_id, status.expires_at),
        )

    async def get(self, job_id: int, now: float) -> StatusMessage | None:
        """The job's status message while its token is valid."""
        row = await self._gateway.fetch_one(
            f"SELECT {_COLUMNS} FROM status_messages WHERE job_id = ? AND expires_at > ?", (job_id, now)
        )
        return None if row is None else _status(row)

    async def valid(self, now: float) -> list[StatusMessage]:
        """Every status message whose token is still valid, oldest job first."""
        rows = await self._gateway.fetch_all(
            f"SELECT {_COLUMNS} FROM status_messages WHERE expires_at > ? ORDER BY job_id", (now,)
        )
        return [_status(row) for row in rows]

    async def delete(self, job_id: int) -> None:
        await self._gateway.write("DELETE FROM status_messages WHERE job_id = ?", (job_id,))

    async def prune(self, now: float) -> int:
        """Delete the rows whose tokens have expired; returns how many."""
        return await self._gateway.write("DELETE FROM status_messages WHERE expires_at <= ?", (now,))
