"""Opening the SQLite file and bringing its schema up to date.

Every connection runs in autocommit mode (``isolation_level=None``) so that transactions are exactly the
``BEGIN IMMEDIATE`` ... ``COMMIT`` blocks the repositories write; WAL lets readers work while one writer
commits, and the busy timeout makes a second process (or a second connection) wait for the write lock
instead of failing at once.

The schema lives in numbered files ``migrations/NNNN_name.sql``. ``PRAGMA user_version`` records the last
one applied. Pending files are applied in one transaction, so a crash half-way leaves the old schema intact,
and a file already applied is never run again. A database written by a newer sdbot stops start-up with a
``ConfigError`` rather than being misread.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

from sdbot.errors import ConfigError

BUSY_TIMEOUT_MS = 5000
CACHE_KIB = 32 * 1024  # page cache per connection
MMAP_BYTES = 256 * 1024 * 1024  # reads through a memory map instead of read() calls

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change."""

    version: int
    name: str
    sql: str


async def connect(path: str | Path) -> aiosqlite.Connection:
    """Open ``path`` (creating its folder) with WAL, a busy timeout, foreign keys on and ``Row`` results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
            row = await cursor.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise ConfigError(
                f"SDBOT_DB={str(path)!r} cannot use SQLite's WAL journal (is it on a network share?)"
            )
        # NORMAL is durable across application crashes in WAL mode; only a power cut may lose the last commit.
        await conn.execute("PRAGMA synchronous = NORMAL")
        # Keep hot ledger and job pages in memory: otherwise every quota check re-reads index pages through
        # the OS (a system call each), and checks on a long history ran ~3x slower than on an empty one.
        await conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        await conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        await conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await conn.close()
        raise
    return conn


def load_migrations() -> list[Migration]:
    """The migration files shipped with the package, in order; numbered 1, 2, 3 ... without gaps."""
    migrations = []
    for entry in resources.files("sdbot.db").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            migrations.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"migration {migration.name} is out of sequence: expected number {expected:04d}"
            )
    return migrations


def split_statements(sql: str) -> list[str]:
    """Cut a script into statements, so they run inside our transaction (``executescript`` commits)."""
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise RuntimeError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")
    return statements


def _only_comments(sql: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())


async def migrate(conn: aiosqlite.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply the pending migrations in one transaction and return the schema version now in force."""
    migrations = load_migrations() if migrations is None else migrations
    latest = migrations[-1].version if migrations else 0
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Read the version inside the write transaction: a second process migrating at the same time waits
        # here and then finds the work done.
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        if current > latest:
            raise ConfigError(
                f"the database has schema version {current} but this sdbot knows only up to {latest}: "
                "it was written by a newer sdbot; upgrade sdbot or point SDBOT_DB at another file"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
        if latest != current:
            await conn.execute(f"PRAGMA user_version = {latest:d}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return latest
