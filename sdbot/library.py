"""The model library: the models an operator offers, by name, read once at start-up.

``SDBOT_MODELS`` names a TOML file::

    default = "sd14"

    [models.sd14]
    source = "CompVis/stable-diffusion-v1-4"

    [models.sdxl]
    source = "stabilityai/stable-diffusion-xl-base-1.0"
    description = "SDXL base"
    steps = 30          # optional defaults for this model: steps, guidance, size ("WxH"), sampler
    guidance = 6.0

    [models.juggernaut]
    source = "/models/juggernautXL.safetensors"
    config = "/models/sdxl-config"   # optional, for offline single-file loading

Without it, ``SDBOT_MODEL`` (and ``SDBOT_MODEL_CONFIG``) is a library of one model, named as before: a repo
id as it is, a local file or folder by its name. A bad file stops start-up with a ``ConfigError`` whose one
line names the file, the model and the problem.

Like ``sdbot.config``, this imports nothing from ``sdbot`` but the settings, errors and torch-free parts of
the inference layer (family profiles, checkpoint suffixes, sampler names): the bot, the engine's process and
the CLI all read the library.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbot.config import Settings
from sdbot.errors import ConfigError
from sdbot.inference.checkpoints import SINGLE_FILE_SUFFIXES
from sdbot.inference.families import FamilyProfile
from sdbot.inference.samplers import ALL_SAMPLERS

# For a model whose family is not known yet (the engine has not loaded it): SD 1.x's.
FALLBACK_STEPS, FALLBACK_GUIDANCE, FALLBACK_SIZE = 30, 7.5, (512, 512)
MAX_DESCRIPTION = 100  # what autocomplete shows beside the name fits Discord's 100 characters
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,39}")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")
_SIZE = re.compile(r"([0-9]{2,5})x([0-9]{2,5})")
_KEYS = {"source", "config", "description", "steps", "guidance", "size", "sampler"}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the library. ``steps``, ``guidance`` and ``size``: this model's defaults, where the
    operator set them (else its family's); ``sampler``: the sampler it runs with when a request names none
    (else its own scheduler)."""

    name: str
    source: str  # a hub repo id, a local diffusers folder or a single checkpoint file
    config: str | None = None  # a diffusers config folder or repo id for a single file (offline loading)
    description: str = ""
    steps: int | None = None
    guidance: float | None = None
    size: tuple[int, int] | None = None
    sampler: str | None = None

    @property
    def is_file(self) -> bool:
        return Path(self.source).suffix.lower() in SINGLE_FILE_SUFFIXES

    def defaults(self, profile: FamilyProfile | None) -> ModelDefaults:
        """Steps, guidance and size for a request that sets none: the operator's for this model, else its
        family's (``profile``, once known)."""
        if profile is None:
            family = ModelDefaults(FALLBACK_STEPS, FALLBACK_GUIDANCE, FALLBACK_SIZE)
        else:
            native = (profile.native_size.width, profile.native_size.height)
            family = ModelDefaults(profile.default_steps, profile.default_guidance, native)
        return ModelDefaults(
            steps=family.steps if self.steps is None else self.steps,
            guidance=family.guidance if self.guidance is None else self.guidance,
            size=family.size if self.size is None else self.size,
        )


@dataclass(frozen=True)
class ModelDefaults:
    steps: int
    guidance: float
    size: tuple[int, int]


@dataclass(frozen=True)
class ModelLibrary:
    """The models in the operator's order, and the one used when a request names none."""

    models: tuple[ModelEntry, ...]
    default: str

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def get(self, name: str) -> ModelEntry | None:
        return next((model for model in self.models if model.name == name), None)

    def __getitem__(self, name: str) -> ModelEntry:
        model = self.get(name)
        if model is None:
            raise KeyError(name)
        return model


def load_library(settings: Settings) -> ModelLibrary:
    """The library ``SDBOT_MODELS`` describes, or the one model of ``SDBOT_MODEL``."""
    if settings.models_file is None:
        entry = ModelEntry(
            name=display_name(settings.model), source=settings.model, config=settings.model_config
        )
        return ModelLibrary((entry,), entry.name)
    return read_library(settings.models_file)


def display_name(source: str) -> str:
    """The name a lone ``SDBOT_MODEL`` goes by (in PNGs, and as GPU workers announce it): a repo id as it
    is, a local path by its last part, also on a machine that does not have it (a bot that only dispatches
    to GPU workers names the model they load)."""
    path = Path(source).expanduser()
    if path.is_file() or path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        return path.stem
    if path.exists() or source.startswith(("/", "./", "../", "~")):
        return path.name
    return source


def read_library(path: Path) -> ModelLibrary:
    where = f"SDBOT_MODELS={str(path)!r}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the file ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: not valid TOML ({error})") from None
    unknown = sorted(set(data) - {"default", "models"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: default, [models.NAME] tables)")
    tables = data.get("models")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{where}: no models: add a [models.NAME] table with a source")
    base = path.parent
    models = tuple(_entry(where, name, table, base) for name, table in tables.items())
    default = data.get("default", models[0].name)
    if not isinstance(default, str) or default not in tables:
        raise ConfigError(
            f"{where}: default = {default!r} names no model (models: {', '.join(tables)})"
        )
    return ModelLibrary(models, default)


def _entry(where: str, name: str, table: Any, base: Path) -> ModelEntry:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: model name {name!r} must be 1-40 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    where = f"{where}: model {name!r}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([models.{name}]) with a source")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    source = _text(where, table, "source", required=True)
    assert source is not None
    config = _text(where, table, "config")
    description = _text(where, table, "description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise ConfigError(f"{where}: description has {len(description)} characters; the most is 100")
    return ModelEntry(
        name=name,
        source=_located(where, "source", source, base, file_allowed=True),
        config=None if config is None else _located(where, "config", config, base, file_allowed=False),
        description=description,
        steps=_number(where, table, "steps", int, 1, 150),
        guidance=_number(where, table, "guidance", float, 0.0, 30.0),
        size=_size(where, table),
        sampler=_sampler(where, table),
    )


def _text(where: str, table: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _located(where: str, key: str, value: str, base: Path, *, file_allowed: bool) -> str:
    """A local path (relative ones from the library file's folder) that must exist, or a hub repo id."""
    path = Path(value).expanduser()
    local = path if path.is_absolute() else base / path
    if local.exists():
        if local.is_file() and not file_allowed:
            raise ConfigError(f"{where}: {key} {value!r} is a file; it must be a diffusers folder")
        return str(local)
    looks_local = value.startswith((".", "/", "~")) or path.suffix.lower() in SINGLE_FILE_SUFFIXES
    if looks_local or not _REPO_ID.fullmatch(value):
        raise ConfigError(f"{where}: {key} {value!r}: no such file or folder (nor a hub repo id owner/name)")
    return value


def _number(
    where: str, table: dict[str, Any], key: str, kind: type[int] | type[float], low: float, high: float
) -> Any:
    value = table.get(key)
    if value is None:
        return None
    whole = kind is int
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        noun = "a whole number" if whole else "a number"
        raise ConfigError(f"{where}: {key} must be {noun} from {low:g} to {high:g}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: {key} = {value} is outside {low:g} to {high:g}")
    return kind(value)


def _sampler(where: str, table: dict[str, Any]) -> str | None:
    """A sampler by its web UI name (any case); whether it fits the model is known once the model loads."""
    value = table.get("sampler")
    if value is None:
        return None
    names = {sampler.name.casefold(): sampler.name for sampler in ALL_SAMPLERS}
    if not isinstance(value, str) or value.strip().casefold() not in names:
        raise ConfigError(f"{where}: sampler must be one of {', '.join(dict.fromkeys(names.values()))}")
    return names[value.strip().casefold()]


def _size(where: str, table: dict[str, Any]) -> tuple[int, int] | None:
    value = table.get("size")
    if value is None:
        return None
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f'{where}: size must look like "1024x1024" (width x height in pixels)')
    return int(match[1]), int(match[2])
