"""Persistence: the SQLite file, its migrations and the repositories. The only package that holds SQL."""

from __future__ import annotations

from sdbot.db.connection import connect, migrate
from sdbot.db.database import Database, ForgottenRows
from sdbot.db.guilds import StoredGuildSettings
from sdbot.db.jobs import JobEnding, JobRecord, JobStats
from sdbot.db.members import MemberOverride
from sdbot.db.results import StoredImage, StoredResult
from sdbot.db.statuses import StatusMessage
from sdbot.db.usage import ReserveOutcome, UsageWindow

__all__ = [
    "Database",
    "ForgottenRows",
    "JobEnding",
    "JobRecord",
    "JobStats",
    "MemberOverride",
    "ReserveOutcome",
    "StatusMessage",
    "StoredGuildSettings",
    "StoredImage",
    "StoredResult",
    "UsageWindow",
    "connect",
    "migrate",
]
