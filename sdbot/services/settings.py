"""Per-server settings: the defaults, and what each may be set to, declared once; and a cache that every
write invalidates.

A server stores only what it changed (see ``sdbot.db.guilds``); ``get`` lays those values over
``GuildSettings`` defaults, whose daily quota comes from ``SDBOT_DAILY_QUOTA`` (see ``defaults_from``).
``SCALARS`` declares what an admin may set each setting to (a range or a vocabulary, and rules against the
other settings), which the one generic ``SettingsService.set`` enforces; ``LISTS`` declares the same for
the lists, which ``add`` and ``remove`` change. A new setting is a field and a declaration, not a setter,
a validator and an admin command each. A value that is not allowed raises ``InvalidSetting`` with a message
naming what is; every write drops the server's cached settings, so the next ``get`` reads the new value.
The cache is per process: a second bot process on the same file sees another process's change after its own
next write or restart.

Banned words are whole words or phrases, matched case-insensitively: "cat" bans "Cat" and "cat!" but not
"category"; a phrase such as "red panda" matches with any whitespace between its words. They are stored
lower-case with their whitespace collapsed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from sdbot.config import NSFW_POLICIES, Settings
from sdbot.db import Database, MemberOverride
from sdbot.errors import InvalidSetting
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.inference.samplers import ALL_SAMPLERS

__all__ = ["GuildSettings", "MemberOverride", "SettingsService", "banned_word_in", "defaults_from"]

QUOTA_RANGE = (0, 10_000)
STEPS_RANGE = (1, 150)
COUNT_RANGE = (1, 4)
PIXELS_RANGE = (64 * 64, 2048 * 2048)
QUEUE_LIMIT_RANGE = (1, 50)
MAX_BANNED_WORDS = 500
MAX_BANNED_WORD_LENGTH = 100
MAX_CHANNELS = 500
MAX_LISTED_LORAS = 500


@dataclass(frozen=True)
class GuildSettings:
    """One server's rules. The defaults here are what a server that changed nothing gets."""

    nsfw_policy: str = "block"  # block | spoiler | allow (allow: only in age-restricted channels)
    daily_quota: int = 50  # images per member per rolling 24 h; 0 switches generation off for members
    managers_exempt: bool = True  # members with Manage Server have no quota (unless a personal one is set)
    default_steps: int | None = None  # None: each model's own default
    max_steps: int = 50
    max_count: int = 4  # images per /imagine
    max_pixels: int | None = None  # width * height; None: what the model's sizes need (at least 768x768)
    user_queue_limit: int = 3  # jobs one member may have waiting
    channels: frozenset[int] = field(default_factory=frozenset)  # empty: every channel
    banned_words: frozenset[str] = field(default_factory=frozenset)
    upscale_allowed: bool = True
    uploads_allowed: bool = True  # members may start /imagine from their own picture
    default_model: str | None = None  # None: the library's default
    models: frozenset[str] = field(default_factory=frozenset)  # models members may use; empty: every one
    loras_enabled: bool = True
    loras: frozenset[str] = field(default_factory=frozenset)  # LoRAs members may use; empty: every one
    default_sampler: str | None = None  # None: each model's own (SDBOT_MODELS, else its scheduler)

    def channel_allowed(self, channel_id: int) -> bool:
        return not self.channels or channel_id in self.channels

    def model_allowed(self, name: str) -> bool:
        return not self.models or name in self.models

    def lora_allowed(self, name: str) -> bool:
        return self.loras_enabled and (not self.loras or name in self.loras)


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
    return _normalise_word(match.group(0))


@functools.lru_cache(maxsize=256)
def _banned_pattern(words: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so a phrase wins over a word it starts with. Look-arounds rather than \b, so that a
    # word that begins or ends with punctuation ("c++") still needs a non-word character next to it.
    alternatives = (
        r"\s+".join(re.escape(part) for part in word.split())
        for word in sorted(words, key=lambda word: (-len(word), word))
    )
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _normalise_word(word: str) -> str:
    return " ".join(word.lower().split())


def _check_range(label: str, value: object, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSetting(f"{label} must be a whole number from {low:,} to {high:,} (got {value!r}).")
    return value


class Vocabulary(StrEnum):
    """A list of names a setting's value must be one of; ``SettingsService`` holds each one's ``Choices``,
    since the models (and the LoRAs) are this installation's."""

    NSFW_POLICIES = "NSFW policies"
    SAMPLERS = "samplers"
    MODELS = "models"
    LORAS = "LoRAs"


class Choices(Protocol):
    """The names of a ``Vocabulary``, and how what an admin typed finds one."""

    unknown: str  # the refusal of a name that is none of them; fields: value (as typed), names

    def find(self, typed: str) -> str | None:
        """The name as stored, or None if ``typed`` is none of them."""

    def names(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Names:
    """Choices from a list of names, matched exactly or, if ``loose``, ignoring case and surrounding spaces
    (and stored as the list spells them)."""

    listed: Sequence[str]
    unknown: str
    loose: bool = False

    def find(self, typed: str) -> str | None:
        if not self.loose:
            return typed if typed in self.listed else None
        wanted = typed.strip().casefold()
        return next((name for name in self.listed if name.casefold() == wanted), None)

    def names(self) -> Sequence[str]:
        return tuple(dict.fromkeys(self.listed))


@dataclass(frozen=True)
class LoraFolder:
    """Choices from the LoRA folder, found as ``AddonLibrary.find`` finds them (a file name alone will do)."""

    library: AddonLibrary
    unknown: str = "There is no LoRA {value!r} in the LoRA folder (`/loras` lists them)."

    def find(self, typed: str) -> str | None:
        lora = self.library.find(typed)
        return None if lora is None else lora.name

    def names(self) -> Sequence[str]:
        return tuple(self.library.addons())


FIXED_CHOICES: Mapping[Vocabulary, Choices] = MappingProxyType(
    {
        Vocabulary.NSFW_POLICIES: Names(
            NSFW_POLICIES,
            "NSFW policy must be one of {names} (got {value!r}). "
            "`allow` shows flagged images only in age-restricted channels.",
            loose=True,
        ),
        Vocabulary.SAMPLERS: Names(
            tuple(sampler.name for sampler in ALL_SAMPLERS),
            "There is no sampler {value!r}; the samplers are {names}.",
            loose=True,
        ),
    }
)


@dataclass(frozen=True)
class Rule:
    """What a new value must meet, given the server's settings as they are; ``refusal`` says so otherwise
    (fields: value, settings)."""

    holds: Callable[[GuildSettings, Any], bool]
    refusal: str


@dataclass(frozen=True)
class Scalar:
    """What an admin may set one ``GuildSettings`` field to: a whole number within ``bounds``, a name of a
    ``vocabulary``, or else on/off. None, where the field's own default is None, returns it to the default.
    ``label`` names the setting in refusals."""

    label: str
    bounds: tuple[int, int] | None = None
    vocabulary: Vocabulary | None = None
    rules: tuple[Rule, ...] = ()


SCALARS: Mapping[str, Scalar] = MappingProxyType(
    {
        "nsfw_policy": Scalar("NSFW policy", vocabulary=Vocabulary.NSFW_POLICIES),
        "daily_quota": Scalar("Daily quota", QUOTA_RANGE),
        "managers_exempt": Scalar("Managers exempt from the quota"),
        "default_steps": Scalar(
            "Default steps",
            STEPS_RANGE,
            rules=(
                Rule(
                    lambda settings, steps: steps <= settings.max_steps,
                    "Default steps ({value}) cannot exceed max steps ({settings.max_steps}): "
                    "raise max steps first.",
                ),
            ),
        ),
        "max_steps": Scalar(
            "Max steps",
            STEPS_RANGE,
            rules=(
                Rule(
                    lambda settings, steps: settings.default_steps is None or steps >= settings.default_steps,
                    "Max steps ({value}) cannot be below default steps ({settings.default_steps}): "
                    "lower default steps first.",
                ),
            ),
        ),
        "max_count": Scalar("Max images per request", COUNT_RANGE),
        "max_pixels": Scalar("Max pixels (width x height)", PIXELS_RANGE),
        "user_queue_limit": Scalar("Queued jobs per member", QUEUE_LIMIT_RANGE),
        "upscale_allowed": Scalar("Upscaling"),
        "uploads_allowed": Scalar("Starting from members' own pictures"),
        "default_model": Scalar(
            "Default model",
            vocabulary=Vocabulary.MODELS,
            rules=(
                Rule(
                    lambda settings, name: settings.model_allowed(name),
                    "Allow {value} on this server first (`/sdadmin model allow`).",
                ),
            ),
        ),
        "loras_enabled": Scalar("LoRAs"),
        "default_sampler": Scalar("Default sampler", vocabulary=Vocabulary.SAMPLERS),
    }
)


@dataclass(frozen=True)
class Listed:
    """What an admin may add to one list of ``GuildSettings``, and remove from it. ``clean`` gives the form a
    value is stored and looked up in; the value must then be a name of the ``vocabulary``, if one is given.
    ``missing`` refuses to remove what is not listed (field: value)."""

    noun: str  # for "a server can list at most 500 {noun}"
    missing: str
    limit: int | None = None  # None: as many as the vocabulary has names
    clean: Callable[[Any], Any] | None = None
    vocabulary: Vocabulary | None = None
    rules: tuple[Rule, ...] = ()  # for a value added
    removal_rules: tuple[Rule, ...] = ()

    def cleaned(self, value: Any) -> Any:
        return value if self.clean is None else self.clean(value)


LISTS: Mapping[str, Listed] = MappingProxyType(
    {
        "channels": Listed("channels", "<#{value}> is not in this server's channel list.", MAX_CHANNELS),
        "banned_words": Listed(
            "banned words",
            "{value!r} is not a banned word on this server.",
            MAX_BANNED_WORDS,
            clean=_normalise_word,
            rules=(
                Rule(
                    lambda _, word: re.search(r"\w", word) is not None,
                    "A banned word needs at least one letter or digit.",
                ),
                Rule(
                    lambda _, word: len(word) <= MAX_BANNED_WORD_LENGTH,
                    f"A banned word or phrase can be at most {MAX_BANNED_WORD_LENGTH} characters.",
                ),
            ),
        ),
        "models": Listed(
            "models",
            "{value} is not in this server's list of models.",
            vocabulary=Vocabulary.MODELS,
            removal_rules=(
                Rule(
                    lambda settings, name: settings.default_model != name,
                    "{value} is this server's default model: choose another default first.",
                ),
            ),
        ),
        "loras": Listed(
            "LoRAs",
            "{value} is not in this server's list of LoRAs.",
            MAX_LISTED_LORAS,
            vocabulary=Vocabulary.LORAS,
        ),
    }
)


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
        self._choices: Mapping[Vocabulary, Choices] = {
            **FIXED_CHOICES,
            Vocabulary.MODELS: Names(
                tuple(model_names), "There is no model {value!r}; the models are {names}."
            ),
            Vocabulary.LORAS: LoraFolder(AddonLibrary(None, AddonKind.LORA) if loras is None else loras),
        }
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
