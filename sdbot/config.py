"""Settings read once at start-up from the environment and ``.env``.

The real environment wins over ``.env``. A bad value stops start-up with a ``ConfigError`` whose one-line
message names the variable, the value and what is allowed. The Discord token and the Hugging Face token are
kept out of ``repr`` so that they never reach a log.

This module imports nothing from ``sdbot`` except its errors and the job parameters' bounds, so every layer
can depend on it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from sdbot.errors import ConfigError
from sdbot.params import MAX_LORAS

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
# The standalone checker every model without its own is checked by (it classifies any RGB image).
DEFAULT_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"
# Upscale (Subtle)'s super-resolution model: Swin2SR trained on real-world degradations, 4x (run at 2x).
DEFAULT_UPSCALER = "caidas/swin2SR-realworld-sr-x4-64-bsrgan-psnr"

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32")
NSFW_POLICIES = ("block", "spoiler", "allow")
OFFLOAD_MODES = ("none", "model", "sequential")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REDIS_SCHEMES = ("redis", "rediss", "unix")

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Every setting of the bot. Documented, with defaults, in README and ``.env.example``."""

    discord_token: str | None = field(default=None, repr=False)
    model: str = DEFAULT_MODEL
    model_config: str | None = None  # diffusers config folder or repo id for a single-file model
    models_file: Path | None = None  # a TOML model library (sdbot/library.py); overrides model
    device: str = "auto"
    dtype: str = "auto"
    db_path: Path = Path("data/sdbot.sqlite3")
    dev_guild: int | None = None
    hf_token: str | None = field(default=None, repr=False)
    daily_quota: int = 50
    max_queue: int = 100
    max_batch: int = 4
    job_timeout: float = 600.0
    shutdown_grace: float = 30.0
    post_retry: float = 600.0  # seconds a result's post is retried while Discord fails it, before a refund
    unchecked_policy: str = "spoiler"
    offload: str = "none"
    attention_slicing: bool = False
    vae_tiling: bool = True
    compile: bool = False
    preview_decoder: str | None = None
    safety_checker: str | None = DEFAULT_SAFETY_CHECKER  # None: models without their own run unchecked
    gpu_memory: int | None = None  # bytes models may hold on the GPU; None: its memory less a margin
    cpu_memory: int | None = None  # bytes models moved off the GPU may hold in RAM; None: half the RAM
    engine_process: bool = True  # run the engine in a process of its own (sdbot/inference/process.py)
    # Super-resolution for Upscale (Subtle): a Swin2SR hub repo or folder, an ESRGAN-family file, or
    # "lanczos" (no model); see sdbot/inference/upscalers.py.
    upscaler: str = DEFAULT_UPSCALER
    max_upload_mb: int = 10  # the largest picture a member may start from
    lora_dir: Path | None = None  # LoRA files offered to members (sdbot/inference/addons.py)
    embeddings_dir: Path | None = None  # textual-inversion embeddings, usable by name in prompts
    max_loras: int = 3  # LoRAs per request
    log_level: str = "INFO"
    # GPU workers through Redis (sdbot/remote/): the URL carries the password, so it stays out of repr.
    redis_url: str | None = field(default=None, repr=False)
    local_engine: bool = True  # with Redis: the bot also runs its own engine, as one more worker
    worker_name: str | None = None  # ``python -m sdbot worker``: its name (default: host and process id)
    worker_heartbeat: float = 1.0  # seconds between a worker's heartbeats; it counts as gone after two


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``) over the values in ``dotenv_path``."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    reader = _Reader(values)
    return Settings(
        discord_token=reader.text("DISCORD_TOKEN"),
        model=reader.text("SDBOT_MODEL") or DEFAULT_MODEL,
        model_config=reader.text("SDBOT_MODEL_CONFIG"),
        models_file=reader.path("SDBOT_MODELS"),
        device=reader.choice("SDBOT_DEVICE", DEVICES, "auto"),
        dtype=reader.choice("SDBOT_DTYPE", DTYPES, "auto"),
        db_path=Path(reader.text("SDBOT_DB") or "data/sdbot.sqlite3"),
        dev_guild=reader.number("SDBOT_DEV_GUILD", int, None, minimum=1),
        hf_token=reader.text("HF_TOKEN"),
        daily_quota=reader.number("SDBOT_DAILY_QUOTA", int, 50, minimum=0),
        max_queue=reader.number("SDBOT_MAX_QUEUE", int, 100, minimum=1),
        max_batch=reader.number("SDBOT_MAX_BATCH", int, 4, minimum=1, maximum=64),
        job_timeout=reader.number("SDBOT_JOB_TIMEOUT", float, 600.0, minimum=1),
        shutdown_grace=reader.number("SDBOT_SHUTDOWN_GRACE", float, 30.0, minimum=0),
        post_retry=reader.number("SDBOT_POST_RETRY", float, 600.0, minimum=0),
        unchecked_policy=reader.choice("SDBOT_UNCHECKED_POLICY", NSFW_POLICIES, "spoiler"),
        offload=reader.choice("SDBOT_OFFLOAD", OFFLOAD_MODES, "none"),
        attention_slicing=reader.flag("SDBOT_ATTENTION_SLICING", False),
        vae_tiling=reader.flag("SDBOT_VAE_TILING", True),
        compile=reader.flag("SDBOT_COMPILE", False),
        preview_decoder=reader.text("SDBOT_PREVIEW_DECODER"),
        safety_checker=reader.optional("SDBOT_SAFETY_CHECKER", DEFAULT_SAFETY_CHECKER),
        gpu_memory=reader.size("SDBOT_GPU_MEMORY"),
        cpu_memory=reader.size("SDBOT_CPU_MEMORY"),
        engine_process=reader.flag("SDBOT_ENGINE_PROCESS", True),
        upscaler=reader.text("SDBOT_UPSCALER") or DEFAULT_UPSCALER,
        max_upload_mb=reader.number("SDBOT_MAX_UPLOAD_MB", int, 10, minimum=1, maximum=100),
        lora_dir=reader.folder("SDBOT_LORA_DIR"),
        embeddings_dir=reader.folder("SDBOT_EMBEDDINGS_DIR"),
        max_loras=reader.number("SDBOT_MAX_LORAS", int, 3, minimum=0, maximum=MAX_LORAS),
        log_level=reader.choice("SDBOT_LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
        redis_url=_checked_redis_url(reader.text("SDBOT_REDIS_URL")),
        local_engine=reader.flag("SDBOT_LOCAL_ENGINE", True),
        worker_name=reader.text("SDBOT_WORKER_NAME"),
        worker_heartbeat=reader.number("SDBOT_WORKER_HEARTBEAT", float, 1.0, minimum=0.1, maximum=60),
    )


def redis_location(url: str) -> str:
    """Where a Redis URL points, without its password: for logs and admins."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def _checked_redis_url(url: str | None) -> str | None:
    """Anyone who can write to the Redis would decide what every worker runs and what the bot posts: a
    plain ``redis://`` URL must carry a password unless Redis is on this machine (loopback)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"SDBOT_REDIS_URL must start with {', '.join(s + '://' for s in REDIS_SCHEMES)}, not {url[:12]!r}"
        )
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        raise ConfigError("SDBOT_REDIS_URL has a port that is not a number") from None
    if parts.scheme == "redis" and not parts.password and not _is_loopback(parts.hostname or "localhost"):
        raise ConfigError(
            f"SDBOT_REDIS_URL ({redis_location(url)}) has no password: give Redis one "
            "(redis://:PASSWORD@host:6379/0) and keep it on a private network or behind TLS (rediss://)"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Parses raw strings into typed values, raising one-line ``ConfigError``s."""

    _TRUE = ("1", "true", "yes", "on")
    _FALSE = ("0", "false", "no", "off")

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def text(self, name: str) -> str | None:
        value = self._values.get(name, "").strip()
        return value or None

    def path(self, name: str) -> Path | None:
        raw = self.text(name)
        return None if raw is None else Path(raw).expanduser()

    def folder(self, name: str) -> Path | None:
        """A folder that must exist (its files may come and go while the bot runs)."""
        path = self.path(name)
        if path is not None and not path.is_dir():
            raise ConfigError(f"{name}={self.text(name)!r} is not allowed: use an existing folder")
        return path

    def optional(self, name: str, default: str) -> str | None:
        """A text that ``none`` switches off; unset, ``default``."""
        raw = self.text(name)
        if raw is None:
            return default
        return None if raw.lower() == "none" else raw

    def size(self, name: str) -> int | None:
        """A memory size in bytes: ``24GiB``, ``1500MiB``, ``24GB``, ``512M``; a bare number is GiB."""
        raw = self.text(name)
        if raw is None:
            return None
        match = _SIZE.fullmatch(raw.replace(" ", ""))
        if match is None or float(match[1]) <= 0:
            raise ConfigError(f"{name}={raw!r} is not allowed: use a size such as 24GiB, 1500MiB or 24 (GiB)")
        return int(float(match[1]) * _SIZE_UNITS[(match[2] or "gi").lower().removesuffix("b")])

    def choice(self, name: str, allowed: tuple[str, ...], default: str, *, upper: bool = False) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise ConfigError(f"{name}={raw!r} is not allowed: use one of {', '.join(allowed)}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in self._TRUE:
            return True
        if raw.lower() in self._FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not allowed: use 1 or 0 (true/false, yes/no, on/off)")

    def number(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        bounds = _describe_bounds(kind, minimum, maximum)
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not allowed: use {bounds}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):  # type: ignore[operator]
            raise ConfigError(f"{name}={raw!r} is not allowed: use {bounds}")
        return value


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kmgt]i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,  # "b"
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def _describe_bounds(kind: Callable[[str], object], minimum: float | None, maximum: float | None) -> str:
    noun = "a whole number" if kind is int else "a number"
    if minimum is not None and maximum is not None:
        return f"{noun} from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"{noun} of at least {minimum:g}"
    return noun
