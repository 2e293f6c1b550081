"""Reading and changing server settings: the defaults for this installation, a cache that every write
invalidates, one generic accessor for the single values (``set``) and one for the lists (``add``,
``remove``), both checked against the declarations in ``sdbot.services.settings_schema``; and member
overrides.

A server stores only what it changed (see ``sdbot.db.guilds``); ``get`` lays those values over
``GuildSettings`` defaults, whose daily quota comes from ``SDBOT_DAILY_QUOTA`` (see ``defaults_from``). A
value that is not allowed raises ``InvalidSetting`` with a message naming what is; every write drops the
server's cached settings, so the next ``get`` reads the new value. The cache is per process: a second bot
process on the same file sees another process's change after its own next write or restart.

Banned words are whole words or phrases, matched case-insensitively: "cat" bans "Cat" and "cat!" but not
"category"; a phrase such as "red panda" matches with any whitespace between its words. They are stored
lower-case with their whitespace collapsed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sdbot.config import Settings
from sdbot.db import Database, MemberOverride
from sdbot.errors import InvalidSetting
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.services.settings_schema import (
    LISTS,
    QUOTA_RANGE,
    SCALARS,
    GuildSettings,
    Rule,
    Scalar,
    Vocabulary,
    normalise_word,
    vocabularies,
)

__all__ = ["GuildSettings", "MemberOverride", "SettingsService", "banned_word_in", "defaults_from"]


def defaults_from(config: Settings) -> GuildSettings:
    """Defaults for this installation: the daily quota from ``SDBOT_DAILY_QUOTA``, the image count capped by
    ``SDBOT_MAX_BATCH``."""
    return GuildSettings(
        daily_quota=config.daily_quota, max_count=min(GuildSettings.max_count, config.max_batch)
    )


def banned_word_in(prompt: str, settings: GuildSettings) -> str | None:
    """The first banned word or phrase found in ``prompt`` as a whole word, case-insensitively, or None."""
    if not settings.banned_words:
        return None
    match = _banned_pattern(settings.banned_words).search(prompt)
    if match is None:
        return None
    return normalise_word(match.group(0))


@functools.lru_cache(maxsize=256)
def _banned_pattern(words: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so a phrase wins over a word it starts with. Look-arounds rather than \b, so that a
    # word that begins or ends with punctuation ("c++") still needs a non-word character next to it.
    alternatives = (
        r"\s+".join(re.escape(part) for part in word.split())
        for word in sorted(words, key=lambda word: (-len(word), word))
    )
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _check_range(label: str, value: object, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSetting(f"{label} must be a whole number from {low:,} to {high:,} (got {value!r}).")
    return value


def _enforce(rules: Sequence[Rule], settings: GuildSettings, value: Any) -> None:
    for rule in rules:
        if not rule.holds(settings, value):
            raise InvalidSetting(rule.refusal.format(value=value, settings=settings))


class SettingsService:
    """Reads and changes server settings and member overrides."""

    def __init__(
        self,
        db: Database,
        defaults: GuildSettings | None = None,
        model_names: Sequence[str] = (),
        loras: AddonLibrary | None = None,
    ) -> None:
        self._db = db
        self.defaults = GuildSettings() if defaults is None else defaults
        no_loras = AddonLibrary(None, AddonKind.LORA)
        self._choices = vocabularies(model_names, no_loras if loras is None else loras)
        self._cache: dict[int, GuildSettings] = {}
        self._writes = 0  # bumped by every write, so a read that raced one is not cached

    async def get(self, guild_id: int) -> GuildSettings:
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        writes = self._writes
        stored = await self._db.guilds.get(guild_id)
        settings = replace(self.defaults, **stored.values, **stored.lists)
        if writes == self._writes:
            self._cache[guild_id] = settings
        return settings

    async def set(self, guild_id: int, name: str, value: object) -> GuildSettings:
        """Change the setting ``name`` (a ``SCALARS`` key) to ``value``, once its declaration allows it."""
        declared = SCALARS[name]
        # None stores no value: the default, which only a field whose own default is None may return to.
        if value is not None or getattr(GuildSettings, name) is not None:
            value = self._checked(declared, value)
            _enforce(declared.rules, await self.get(guild_id), value)
        await self._db.guilds.set_value(guild_id, name, value)
        return await self._reload(guild_id)

    async def reset(self, guild_id: int) -> GuildSettings:
        """Every setting back to its default, except the lists (channels, banned words, models, LoRAs)."""
        await self._db.guilds.reset(guild_id)
        return await self._reload(guild_id)

    async def add(self, guild_id: int, name: str, value: object) -> GuildSettings:
        """Add ``value`` to the list ``name`` (a ``LISTS`` key), once its declaration allows it."""
        declared = LISTS[name]
        value = declared.cleaned(value)
        if declared.vocabulary is not None:
            value = self._find(declared.vocabulary, value)
        current = await self.get(guild_id)
        _enforce(declared.rules, current, value)
        listed: frozenset[Any] = getattr(current, name)
        limit = declared.limit
        if limit is None and declared.vocabulary is not None:
            limit = len(self._choices[declared.vocabulary].names())
        if value not in listed and limit is not None and len(listed) >= limit:
            raise InvalidSetting(f"A server can list at most {limit} {declared.noun}; remove some first.")
        await self._db.guilds.add_to_list(guild_id, name, value)
        return await self._reload(guild_id)

    async def remove(self, guild_id: int, name: str, value: object) -> GuildSettings:
        """Take ``value`` off the list ``name``; a name the vocabulary no longer has can still go."""
        declared = LISTS[name]
        value = declared.cleaned(value)
        stored = value
        if declared.vocabulary is not None and isinstance(value, str):
            stored = self._choices[declared.vocabulary].find(value) or value
        _enforce(declared.removal_rules, await self.get(guild_id), stored)
        if not await self._db.guilds.remove_from_list(guild_id, name, stored):
            raise InvalidSetting(declared.missing.format(value=value))
        return await self._reload(guild_id)

    async def member(self, guild_id: int, user_id: int) -> MemberOverride:
        return await self._db.members.get(guild_id, user_id)

    async def set_member_quota(self, guild_id: int, user_id: int, quota: int | None) -> MemberOverride:
        """A personal daily quota; None returns the member to the server's quota."""
        if quota is not None:
            _check_range("A member's daily quota", quota, QUOTA_RANGE)
        await self._db.members.set_quota(guild_id, user_id, quota)
        return await self.member(guild_id, user_id)

    async def set_blocked(self, guild_id: int, user_id: int, blocked: bool) -> MemberOverride:
        await self._db.members.set_blocked(guild_id, user_id, blocked)
        return await self.member(guild_id, user_id)

    def _checked(self, declared: Scalar, value: object) -> object:
        """``value`` as stored, or InvalidSetting naming what is allowed."""
        if declared.bounds is not None:
            return _check_range(declared.label, value, declared.bounds)
        if declared.vocabulary is not None:
            return self._find(declared.vocabulary, value)
        return bool(value)

    def _find(self, vocabulary: Vocabulary, typed: object) -> str:
        choices = self._choices[vocabulary]
        found = choices.find(typed) if isinstance(typed, str) else None
        if found is None:
            raise InvalidSetting(choices.unknown.format(value=typed, names=", ".join(choices.names())))
        return found

    async def _reload(self, guild_id: int) -> GuildSettings:
        self._writes += 1
        self._cache.pop(guild_id, None)
        return await self.get(guild_id)
