"""The server settings, each declared once: its default (a ``GuildSettings`` field) and what an admin may set
it to (``SCALARS`` for single values, ``LISTS`` for lists): a range or a vocabulary of names, and rules
against the other settings, with the words of each refusal.

``SettingsService`` (``sdbot.services.settings``) reads these declarations in one generic ``set`` and one
``add``/``remove`` pair, so a new setting is a field, a declaration and its column (``sdbot.db.guilds``),
not a setter with checks of its own. Nothing here touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from sdbot.config import NSFW_POLICIES
from sdbot.inference.addons import AddonLibrary
from sdbot.inference.samplers import ALL_SAMPLERS

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


def normalise_word(word: str) -> str:
    """A banned word as stored and matched: lower-case, its whitespace collapsed."""
    return " ".join(word.lower().split())


class Vocabulary(StrEnum):
    """A list of names a setting's value must be one of."""

    NSFW_POLICIES = "NSFW policies"
    SAMPLERS = "samplers"
    MODELS = "models"
    LORAS = "LoRAs"


class Choices(Protocol):
    """The names of a ``Vocabulary`` as this installation has them, and how what an admin typed finds one."""

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


def vocabularies(model_names: Sequence[str], loras: AddonLibrary) -> Mapping[Vocabulary, Choices]:
    """Each vocabulary's choices; the models and LoRAs are this installation's."""
    return MappingProxyType(
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
            Vocabulary.MODELS: Names(
                tuple(model_names), "There is no model {value!r}; the models are {names}."
            ),
            Vocabulary.LORAS: LoraFolder(loras),
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
            clean=normalise_word,
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
