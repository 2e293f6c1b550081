"""The ``Database``: one SQLite file, migrated on open, with one repository per table group.

Everything the bot must remember lives in this one file, so an admin backs up one file and a restart loses
nothing. Several ``Database`` objects (or bot processes) may share a file: writes take SQLite's write lock
(``BEGIN IMMEDIATE``) and wait for each other up to the busy timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sdbot.db.connection import connect, migrate
from sdbot.db.gateway import Gateway
from sdbot.db.guilds import GuildsRepository
from sdbot.db.jobs import JobsRepository, delete_user_jobs
from sdbot.db.members import MembersRepository, delete_user_overrides
from sdbot.db.meta import MetaRepository
from sdbot.db.sources import SourceStore
from sdbot.db.usage import UsageRepository, delete_user_usage

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
        self.jobs = JobsRepository(gateway, SourceStore(sources_folder(path)))
        self.meta = MetaRepository(gateway)

    @classmethod
    async def open(cls, path: str | Path) -> Database:
        """Open (creating the file and its folder if needed), bring the schema up to date and delete the
        stored pictures no unfinished job needs any more."""
        path = Path(path)
        conn = await connect(path)
        try:
            version = await migrate(conn)
        except BaseException:
            await conn.close()
            raise
        db = cls(Gateway(conn), path, version)
        removed = await db.jobs.sweep_sources(older_than=SOURCE_GRACE)
        if removed:
            log.info("deleted %d stored picture(s) of jobs that had ended", removed)
        return db

    async def close(self) -> None:
        await self._gateway.conn.close()

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
