"""The job ledger: every job ever queued, so that queued jobs survive a restart and result buttons keep
working (a reroll reads its parent's parameters from here).

A job moves queued -> running -> done | failed | cancelled; ``requeue`` puts a running job back in the queue
after a restart. A done job's images are ``undelivered`` until its result message is recorded; one whose
images cannot be posted ends failed instead. Each transition checks the state it starts from and says
whether it happened, so that a cancel racing a finish has exactly one winner. The picture a job starts from is
a file of the ``SourceStore``, written before the row that names it and deleted when the job ends (jobs queued
before schema 3 keep theirs in ``source_png``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from sdbot.db.gateway import Gateway
from sdbot.db.sources import SourceStore
from sdbot.params import JobKind, JobParams, JobState

UNFINISHED = (JobState.QUEUED, JobState.RUNNING)

_COLUMNS = (
    "id, guild_id, channel_id, user_id, kind, parent_id, params, image_count, state, error, seeds, nsfw, "
    "message_id, reservation_id, created_at, started_at, finished_at"
)


@dataclass(frozen=True)
class JobRecord:
    """One job as stored."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    kind: JobKind
    parent_id: int | None
    params: JobParams
    image_count: int
    state: JobState
    error: str | None
    seeds: list[int]
    nsfw: list[bool | None]
    message_id: int | None
    reservation_id: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def finished(self) -> bool:
        return self.state.finished


@dataclass(frozen=True)
class JobStats:
    """What a server's jobs produced since a moment: done jobs, their images, speed and busiest users."""

    images: int
    jobs: int
    seconds_per_image: float | None
    top_users: list[tuple[int, int]]  # (user_id, images), most images first


@dataclass(frozen=True)
class JobEnding:
    """How a job ends: done (with each image's seed and NSFW verdict), failed (with a reason fit for the
    member) or cancelled."""

    state: JobState
    finished_at: float
    seeds: Sequence[int] = ()
    nsfw: Sequence[bool | None] = ()
    error: str | None = None

    def __post_init__(self) -> None:
        if not self.state.finished:
            raise ValueError(f"a job does not end {self.state}")


@dataclass(frozen=True)
class Ended:
    """What a job's end leaves to do: settle its reservation, delete its source picture (once committed)."""

    reservation_id: int | None
    source_file: str | None


async def end_job(conn: aiosqlite.Connection, job_id: int, ending: JobEnding) -> Ended | None:
    """queued or running -> the ending's state, inside the caller's transaction (its source picture is no
    longer named; a done job's images are then waiting to be posted). None if the job had already ended."""
    async with conn.execute(
        "SELECT reservation_id, source_file FROM jobs WHERE id = ? AND state IN ('queued', 'running')",
        (job_id,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    await conn.execute(
        "UPDATE jobs SET state = ?, seeds = ?, nsfw = ?, error = ?, finished_at = ?, source_file = NULL, "
        "source_png = NULL, undelivered = ? WHERE id = ?",
        (
            ending.state,
            json.dumps(list(ending.seeds)),
            json.dumps(list(ending.nsfw)),
            ending.error,
            ending.finished_at,
            int(ending.state is JobState.DONE),
            job_id,
        ),
    )
    return Ended(row["reservation_id"], row["source_file"])


async def abandon_delivery(
    conn: aiosqlite.Connection, job_id: int, error: str
) -> tuple[bool, int | None]:
    """A done job whose images could not be posted becomes failed, inside the caller's transaction. Returns
    whether it happened and the job's reservation id."""
    async with conn.execute(
        "UPDATE jobs SET state = 'failed', error = ?, undelivered = 0 "
        "WHERE id = ? AND state = 'done' AND undelivered = 1 RETURNING reservation_id",
        (error, job_id),
    ) as cursor:
        row = await cursor.fetchone()
    return (False, None) if row is None else (True, row["reservation_id"])


async def delete_user_jobs(conn: aiosqlite.Connection, guild_id: int, user_id: int) -> int:
    """Delete a member's jobs in a server, inside the caller's transaction."""
    async with conn.execute(
        "DELETE FROM jobs WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    ) as cursor:
        return cursor.rowcount


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        kind=JobKind(row["kind"]),
        parent_id=row["parent_id"],
        params=JobParams.from_json(row["params"]),
        image_count=row["image_count"],
        state=JobState(row["state"]),
        error=row["error"],
        seeds=json.loads(row["seeds"]),
        nsfw=json.loads(row["nsfw"]),
        message_id=row["message_id"],
        reservation_id=row["reservation_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class JobsRepository:
    """Reads and writes the ``jobs`` table."""

    def __init__(self, gateway: Gateway, sources: SourceStore) -> None:
        self._gateway = gateway
        self._sources = sources

    async def create(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        kind: JobKind,
        params: JobParams,
        image_count: int,
        parent_id: int | None = None,
        reservation_id: int | None = None,
        source_png: bytes | None = None,
        now: float,
    ) -> JobRecord:
        """Store a new queued job (and the picture it starts from) and return it with its id."""
        source_file = None if source_png is None else await self._sources.write(source_png)
        try:
            row = await self._gateway.fetch_one(
                "INSERT INTO jobs (guild_id, channel_id, user_id, kind, parent_id, params, image_count, "
                "reservation_id, source_file, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"RETURNING {_COLUMNS}",
                (
                    guild_id,
                    channel_id,
                    user_id,
                    kind,
                    parent_id,
                    params.to_json(),
                    image_count,
                    reservation_id,
                    source_file,
                    now,
                ),
            )
        except BaseException:
            if source_file is not None:
                await self._sources.delete(source_file)
            raise
        assert row is not None
        return _record(row)

    async def get(self, job_id: int) -> JobRecord | None:
        row = await self._gateway.fetch_one(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _record(row)

    async def source_png(self, job_id: int) -> bytes | None:
        """The picture an unfinished job starts from (kept so that the job survives a restart)."""
        row = await self._gateway.fetch_one(
            "SELECT source_file, source_png FROM jobs WHERE id = ?", (job_id,)
        )
        if row is None:
            return None
        if row["source_file"] is not None:
            return await self._sources.read(row["source_file"])
        return row["source_png"]

    async def sweep_sources(self, *, older_than: float) -> int:
        """Delete the stored pictures that no unfinished job names and that are older than ``older_than``
        seconds (a younger one may belong to a row another process is about to write)."""
        rows = await self._gateway.fetch_all("SELECT source_file FROM jobs WHERE source_file IS NOT NULL")
        return await self._sources.sweep({row["source_file"] for row in rows}, older_than=older_than)

    async def mark_running(self, job_id: int, now: float) -> bool:
        """queued -> running; False if the job was no longer queued (cancelled meanwhile, say)."""
        return await self._transition(job_id, ("queued",), "state = 'running', started_at = ?", (now,))

    async def requeue(self, job_id: int) -> bool:
        """running -> queued, for a job a restart interrupted."""
        return await self._transition(job_id, ("running",), "state = 'queued', started_at = NULL", ())

    async def set_message(self, job_id: int, message_id: int) -> None:
        """Remember the message that shows the job's result (its buttons carry the job id): its images are
        delivered."""
        await self._gateway.write(
            "UPDATE jobs SET message_id = ?, undelivered = 0 WHERE id = ?", (message_id, job_id)
        )

    async def undelivered(self) -> list[JobRecord]:
        """Done jobs whose images wait to be posted, oldest first."""
        rows = await self._gateway.fetch_all(
            f"SELECT {_COLUMNS} FROM jobs WHERE undelivered = 1 AND state = 'done' ORDER BY id"
        )
        return [_record(row) for row in rows]

    async def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first."""
        rows = await self._gateway.fetch_all(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id"
        )
        return [_record(row) for row in rows]

    async def stats(self, guild_id: int, since: float, *, top: int = 5) -> JobStats:
        """Done jobs of a server created at or after ``since``."""
        totals = await self._gateway.fetch_one(
            "SELECT COUNT(*) AS jobs, COALESCE(SUM(image_count), 0) AS images, "
            "SUM(CASE WHEN started_at IS NOT NULL THEN finished_at - started_at END) AS seconds, "
            "SUM(CASE WHEN started_at IS NOT NULL THEN image_count END) AS timed_images "
            "FROM jobs WHERE guild_id = ? AND created_at >= ? AND state = 'done'",
            (guild_id, since),
        )
        users = await self._gateway.fetch_all(
            "SELECT user_id, SUM(image_count) AS images FROM jobs "
            "WHERE guild_id = ? AND created_at >= ? AND state = 'done' "
            "GROUP BY user_id ORDER BY images DESC, user_id LIMIT ?",
            (guild_id, since, top),
        )
        assert totals is not None
        timed = totals["timed_images"]
        return JobStats(
            images=totals["images"],
            jobs=totals["jobs"],
            seconds_per_image=totals["seconds"] / timed if timed else None,
            top_users=[(row["user_id"], row["images"]) for row in users],
        )

    async def delete_for_user(self, guild_id: int, user_id: int) -> int:
        """Delete a member's jobs in a server; other jobs made from them keep their own parameters."""
        async with self._gateway.transaction() as conn:
            return await delete_user_jobs(conn, guild_id, user_id)

    async def _transition(
        self, job_id: int, from_states: tuple[str, ...], assignments: str, params: tuple[Any, ...]
    ) -> bool:
        placeholders = ", ".join("?" for _ in from_states)
        changed = await self._gateway.write(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN ({placeholders})",
            (*params, job_id, *from_states),
        )
        return changed == 1
