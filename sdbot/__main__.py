"""Command line: ``python -m sdbot generate`` makes images without Discord; ``python -m sdbot models`` lists
the model library; ``python -m sdbot doctor`` checks the machine and every model before an admin connects the
bot; ``python -m sdbot health`` tells whether the running bot is alive (Docker's HEALTHCHECK), exiting 0 or 1;
``python -m sdbot worker`` runs a GPU worker that takes the bot's jobs through Redis (``SDBOT_REDIS_URL``)
until SIGTERM or Ctrl-C.

They read the same settings as the bot (environment and ``.env``) and load models through the same code.
``--model`` names a model of the library or a source (a hub repo id, a folder, a checkpoint file). A bad
argument or setting prints one line on stderr and exits with status 2; a model that fails to load or a failed
generation exits with 1.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sdbot.config import Settings, load_settings
from sdbot.errors import ConfigError, GenerationFailed, ModelLoadFailed, PromptRejected
from sdbot.health import check_heartbeat, heartbeat_path
from sdbot.inference.families import model_limits
from sdbot.inference.prompt_syntax import split_loras
from sdbot.inference.sources import inspect_source
from sdbot.inference.types import EngineRequest, Operation
from sdbot.library import ModelLibrary, load_library
from sdbot.params import ENGINE_LIMITS, JobParams, check_params

if TYPE_CHECKING:
    from sdbot.inference.engine import DiffusersEngine
    from sdbot.inference.families import FamilyProfile
    from sdbot.library import ModelEntry

DOCTOR_STEPS = 4
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "discord.py")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sdbot: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        library = _library(settings, getattr(args, "model", None))
    except ConfigError as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    if args.command == "health":
        return _health(settings)
    if args.command == "models":
        return _models(library)
    if args.command == "worker":
        return _worker(args, settings)
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "generate":
        return _generate(args, settings, library)
    return _doctor(settings, library, args.size)


def _library(settings: Settings, model: str | None) -> ModelLibrary:
    """The settings' library, or with ``--model`` the one model it names: a library name, else a source."""
    library = load_library(settings)
    if model is None:
        return library
    entry = library.get(model) or load_library(replace(settings, model=model, models_file=None)).models[0]
    return ModelLibrary((entry,), entry.name)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sdbot", description="Stable Diffusion for Discord: command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    generate = commands.add_parser("generate", help="make images from a prompt and save them as PNG")
    generate.add_argument("prompt")
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument("--steps", type=int, help="default: the model's")
    generate.add_argument("--guidance", type=float, help="default: the model's")
    generate.add_argument("--seed", type=int, help="default: random; image i uses seed + i")
    generate.add_argument("--size", type=_size, metavar="WxH", help="default: the model's native size")
    generate.add_argument("--count", type=int, default=1, help="images, 1-4")
    generate.add_argument(
        "--out", type=Path, default=Path("outputs"), help="a folder, or a .png file name (default: outputs/)"
    )
    generate.add_argument("--model", help="a model of the library, or a source (default: the library's)")
    generate.add_argument("--sampler", help="an AUTOMATIC1111 sampler name (default: the model's)")
    commands.add_parser("models", help="list the model library: family, source, on disk, size")
    doctor = commands.add_parser("doctor", help="check versions, device, every model and its speed")
    doctor.add_argument("--model", help="check only this model (of the library, or a source)")
    doctor.add_argument("--size", type=_size, metavar="WxH", help="test image size (default: each model's)")
    commands.add_parser("health", help="exit 0 when the running bot's heartbeat is fresh and it is connected")
    worker = commands.add_parser("worker", help="run a GPU worker that takes the bot's jobs through Redis")
    worker.add_argument("--name", help="this worker's name (default: SDBOT_WORKER_NAME, else host-pid)")
    worker.add_argument(
        "--engine",
        metavar="MODULE:FUNCTION",
        help="make the engine with this function of the settings instead of loading SDBOT_MODEL "
        "(benchmarks and tests run a simulated engine this way)",
    )
    return parser


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.redis_url is None:
        print(
            "sdbot: SDBOT_REDIS_URL is not set: a worker takes its jobs from the bot's Redis "
            "(e.g. redis://:PASSWORD@gpu-hub:6379/0)",
            file=sys.stderr,
        )
        return 2
    if args.engine is not None and ":" not in args.engine:
        print(f"sdbot: --engine must look like module:function, not {args.engine!r}", file=sys.stderr)
        return 2
    from sdbot.logs import setup_logging
    from sdbot.remote.node import run_worker

    setup_logging(settings.log_level)
    return run_worker(settings, name=args.name, engine=args.engine)


def _health(settings: Settings) -> int:
    healthy, reason = check_heartbeat(heartbeat_path(settings.db_path), now=time.time())
    print(f"sdbot: {reason}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must look like 512x768, got {text!r}")
    return int(width), int(height)


def _generate(args: argparse.Namespace, settings: Settings, library: ModelLibrary) -> int:
    entry = library[library.default]
    try:
        prompt, loras = split_loras(args.prompt)  # <lora:NAME:WEIGHT> tags, from SDBOT_LORA_DIR
    except PromptRejected as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    given = JobParams(
        prompt=prompt,
        negative_prompt=args.negative,
        steps=1 if args.steps is None else args.steps,
        guidance=0.0 if args.guidance is None else args.guidance,
        width=args.size[0] if args.size else 512,
        height=args.size[1] if args.size else 512,
        seed=args.seed,
        count=args.count,
        model=entry.name,
        loras=loras,
        sampler=args.sampler,
    )
    if _refused(given):  # what was given, by the engine's ranges, before the slow model load
        return 2
    folder = _output_folder(args.out)
    try:  # before the model loads: a folder that cannot be made must not cost the images made
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        print(f"sdbot: --out {args.out}: cannot make the folder {folder} ({reason})", file=sys.stderr)
        return 2
    # torch and diffusers load slowly and warn on import: not before the arguments are known to be good
    from sdbot.inference.engine import load_engine

    try:
        engine = load_engine(settings, library)
        profile = engine.models[entry.name].profile
        defaults = entry.defaults(profile)
        params = replace(
            given,
            steps=defaults.steps if args.steps is None else args.steps,
            guidance=defaults.guidance if args.guidance is None else args.guidance,
            width=args.size[0] if args.size else defaults.size[0],
            height=args.size[1] if args.size else defaults.size[1],
        )
        check_params(params, model_limits(profile, ENGINE_LIMITS, entry.name))
        [result] = engine.run(Operation.GENERATE, [EngineRequest(params)])
    except ValueError as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    except (ModelLoadFailed, GenerationFailed) as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 1
    for image, path in zip(result.images, _output_paths(args.out, result.seeds), strict=True):
        path.write_bytes(image.png)
        flag = {True: "  (flagged NSFW)", False: "", None: "  (not checked: no safety checker)"}[image.nsfw]
        print(f"{path}  seed={image.seed}{flag}")
    return 0


def _models(library: ModelLibrary) -> int:
    """One line per model: name (the default starred), family, on disk or not, weight size, source."""
    for entry in library.models:
        try:
            info = inspect_source(entry.source)
        except ModelLoadFailed as error:
            print(f"{entry.name}  UNREADABLE: {error}")
            continue
        family = "family unknown until downloaded" if info.family is None else info.family.value
        where = "on disk" if info.on_disk else "not downloaded"
        size = "size unknown" if info.weight_bytes is None else f"{info.weight_bytes / 2**30:.1f} GiB weights"
        star = " (default)" if entry.name == library.default else ""
        print(f"{entry.name}{star}  {family}  {where}  {size}  {entry.source}")
    return 0


def _refused(params: JobParams) -> bool:
    """Check ``params`` by the engine's own rules before the slow model load; say why when it cannot run."""
    try:
        check_params(params)
    except ValueError as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return True
    return False


def _output_folder(out: Path) -> Path:
    """Where ``--out`` puts the images: beside a ``.png`` file name, else in the folder it names."""
    return out.parent if out.suffix.lower() == ".png" else out


def _output_paths(out: Path, seeds: list[int]) -> list[Path]:
    """``out.png`` for one image (``out-<seed>.png`` for several); in a folder, ``sdbot-<seed>.png``."""
    if _output_folder(out) == out:
        return [out / f"sdbot-{seed}.png" for seed in seeds]
    if len(seeds) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{seed}.png") for seed in seeds]


def _doctor(settings: Settings, library: ModelLibrary, size: tuple[int, int] | None) -> int:
    """Print what an admin needs to know before connecting the bot; 1 when a model cannot work."""
    if size is not None and _refused(JobParams("a photo of a cat", width=size[0], height=size[1])):
        return 2
    import torch

    from sdbot.inference.engine import load_engine

    print(f"python        {platform.python_version()}")
    for package in VERSIONED_PACKAGES:
        print(f"{package:<13} {_version(package)}")
    print(f"cuda          {torch.version.cuda or 'none (CPU build of torch)'}")
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        print(f"gpu {index}         {props.name}, {props.total_memory / 2**30:.1f} GiB")
    if torch.cuda.device_count() == 0:
        print(f"gpu           none{' (Apple MPS available)' if torch.backends.mps.is_available() else ''}")
    print(f"models        {', '.join(library.names)}")
    started = time.perf_counter()
    try:
        engine = load_engine(settings, library)
    except ModelLoadFailed as error:
        print(f"model load    FAILED: {error}")
        return 1
    print(f"model load    ok in {time.perf_counter() - started:.1f} s")
    print(f"device        {engine.device} ({str(engine.dtype).removeprefix('torch.')})")
    failed = 0
    for info in engine.models.values():
        print(f"model         {info.name}: {info.profile.label} ({info.profile.pipeline})")
        print(f"safety check  {'yes' if info.checked else 'NO: flags are unknown'}")
        failed += not _doctor_generation(engine, library[info.name], info.profile, size)
    return 1 if failed else 0


def _doctor_generation(
    engine: DiffusersEngine, entry: ModelEntry, profile: FamilyProfile, size: tuple[int, int] | None
) -> bool:
    """One short generation of ``entry`` at ``size`` (default: its own), timed; False when it fails."""
    import torch

    width, height = size or entry.defaults(profile).size
    params = JobParams(
        "a photo of a cat",
        steps=DOCTOR_STEPS,
        guidance=entry.defaults(profile).guidance,
        width=width,
        height=height,
        seed=0,
        model=entry.name,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        check_params(params, model_limits(profile, ENGINE_LIMITS, entry.name))
        [result] = engine.run(Operation.GENERATE, [EngineRequest(params)])
    except (ValueError, GenerationFailed) as error:
        print(f"generation    FAILED: {error}")
        return False
    timings = result.timings
    print(
        f"generation    {width}x{height}, {DOCTOR_STEPS} steps: {timings.total:.2f} s "
        f"(denoise {timings.denoise:.2f}, decode {timings.decode:.2f}, safety {timings.safety:.2f})"
    )
    if torch.cuda.is_available():
        print(f"peak VRAM     {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return True


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
