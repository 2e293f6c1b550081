"""The ``Database``: one SQLite file, migrated on open, with one repository per table group.

Everything the bot must remember lives in this one file, so an admin backs up one file and a restart loses
nothing; only the images of done jobs not yet posted wait beside it (``sdbot.db.results``). Several
``Database`` objects (or bot processes) may share a file: writes take SQLite's write lock (``BEGIN
IMMEDIATE``) and wait for each other up to the busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from sdbot.db.connection import connect, migrate
from sdbot.db.gateway import Gateway
from sdbot.db.guilds import GuildsRepository
from sdbot.db.jobs import JobEnding, JobsRepository, abandon_delivery, delete_user_jobs, end_job
from sdbot.db.members import MembersRepository, delete_user_overrides
from sdbot.db.meta import MetaRepository
from sdbot.db.results import ResultFiles, results_folder
from sdbot.db.sources import SourceStore
from sdbot.db.statuses import StatusMessagesRepository
from sdbot.db.usage import UsageRepository, delete_user_usage, settle_reservation
from sdbot.errors import ConfigError
from sdbot.params import JobState

log = logging.getLogger(__name__)

# A stored picture no unfinished job names is left alone this long (another process may be writing its row).
SOURCE_GRACE = 10 * 60


@dataclass(frozen=True)
class ForgottenRows:
    """How many rows ``forget_user`` deleted, table by table."""

    jobs: int
    usage: int
    overrides: int


class Database:
    """An open, migrated database file and its repositories."""

    def __init__(self, gateway: Gateway, path: Path, schema_version: int) -> None:
        self.path = path
        self.schema_version = schema_version
        self._gateway = gateway
        self.guilds = GuildsRepository(gateway)
        self.members = MembersRepository(gateway)
        self.usage = UsageRepository(gateway)
        self.sources = SourceStore(sources_folder(path))
        self.jobs = JobsRepository(gateway, self.sources)
        self.meta = MetaRepository(gateway)
        self.statuses = StatusMessagesRepository(gateway)
        self.results = ResultFiles(results_folder(path))

    @classmethod
    async def open(cls, path: str | Path) -> Database:
        """Open (creating the file and its folder if needed), check that it is a whole SQLite database
        (``PRAGMA quick_check``: a few milliseconds per MB), bring the schema up to date and delete the stored
        pictures no unfinished job needs any more. A file or folder that cannot be used raises a
        ``ConfigError`` naming ``SDBOT_DB`` and what to do."""
        path = Path(path)
        if path.is_file() and path.stat().st_size == 0:
            log.warning("SDBOT_DB=%r is an empty file: starting a new database in it", str(path))
        conn: aiosqlite.Connection | None = None
        try:
            conn = await connect(path)
            await _check_whole(conn)
            version = await migrate(conn)
        except BaseException as error:
            if conn is not None:
                await conn.close()
            if isinstance(error, OSError | sqlite3.OperationalError):  # the folder, permissions, a lock
                raise ConfigError(
                    f"SDBOT_DB={str(path)!r} cannot be opened ({_described(error)}): point it at a file in "
                    "a folder the bot may write to"
                ) from error
            if isinstance(error, sqlite3.DatabaseError):  # not SQLite, or damaged (truncated, overwritten)
                raise ConfigError(
                    f"SDBOT_DB={str(path)!r} is not a SQLite database or is damaged ({_described(error)}): "
                    "restore it from a backup, or point SDBOT_DB at a new file"
                ) from error
            raise
        db = cls(Gateway(conn), path, version)
        removed = await db.jobs.sweep_sources(older_than=SOURCE_GRACE)
        if removed:
            log.info("deleted %d stored picture(s) of jobs that had ended", removed)
        return db

    async def close(self) -> None:
        await self._gateway.conn.close()
        await asyncio.to_thread(self.results.close)

    async def end_job(self, job_id: int, ending: JobEnding) -> bool:
        """Record a queued or running job's end and settle its quota in one transaction, so that a fault
        (a locked file, a full disk) leaves both as they were: done commits the reserved images, failed and
        cancelled refund them. False if the job had already ended."""
        async with self._gateway.transaction() as conn:
            ended = await end_job(conn, job_id, ending)
            if ended is not None and ended.reservation_id is not None:
                settled = "committed" if ending.state is JobState.DONE else "refunded"
                await settle_reservation(conn, ended.reservation_id, settled)
        if ended is not None and ended.source_file is not None:
            # Once the end is committed; one left behind (a full disk) goes at the next start's sweep.
            with contextlib.suppress(OSError):
                await self.sources.delete(ended.source_file)
        return ended is not None

    async def abandon_delivery(self, job_id: int, error: str) -> bool:
        """A done job whose images cannot be posted: failed with ``error``, its committed images refunded,
        in one transaction. False if it was not waiting to be posted."""
        async with self._gateway.transaction() as conn:
            abandoned, reservation = await abandon_delivery(conn, job_id, error)
            if abandoned and reservation is not None:
                await settle_reservation(conn, reservation, "refunded", ("reserved", "committed"))
            return abandoned

    async def forget_user(self, guild_id: int, user_id: int) -> ForgottenRows:
        """Delete a member's jobs, quota ledger and overrides in a server, all or nothing."""
        async with self._gateway.transaction() as conn:
            return ForgottenRows(
                jobs=await delete_user_jobs(conn, guild_id, user_id),
                usage=await delete_user_usage(conn, guild_id, user_id),
                overrides=await delete_user_overrides(conn, guild_id, user_id),
            )


def sources_folder(db_path: Path) -> Path:
    """Where the pictures of unfinished jobs live: a folder beside the database file, named after it."""
    return db_path.parent / f"{db_path.stem}-sources"


async def _check_whole(conn: aiosqlite.Connection) -> None:
    """Raise ``sqlite3.DatabaseError`` unless SQLite finds the file whole (a truncated copy is not)."""
    async with conn.execute("PRAGMA quick_check(1)") as cursor:
        row = await cursor.fetchone()
    if row is None or row[0] != "ok":
        raise sqlite3.DatabaseError(row[0] if row else "no answer to quick_check")


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
