"""Command line: ``python -m sdbot generate`` makes images without Discord; ``python -m sdbot doctor`` checks
the machine and the model before an admin connects the bot; ``python -m sdbot health`` tells whether the
running bot is alive (Docker's HEALTHCHECK), exiting 0 or 1.

Both read the same settings as the bot (environment and ``.env``) and load the model through the same
code. A bad argument or setting prints one line on stderr and exits with status 2; a model that fails to
load or a failed generation exits with 1.
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
from typing import NoReturn

from sdbot.config import Settings, load_settings
from sdbot.errors import ConfigError, GenerationFailed, ModelLoadFailed
from sdbot.health import check_heartbeat, heartbeat_path
from sdbot.inference.types import EngineRequest, Operation
from sdbot.params import JobParams, check_params

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
    except ConfigError as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 2
    if args.command == "health":
        return _health(settings)
    if args.model:
        settings = replace(settings, model=args.model)
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "generate":
        return _generate(args, settings)
    return _doctor(settings, args.size)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sdbot", description="Stable Diffusion for Discord: command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    generate = commands.add_parser("generate", help="make images from a prompt and save them as PNG")
    generate.add_argument("prompt")
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument("--steps", type=int, default=30)
    generate.add_argument("--guidance", type=float, default=7.5)
    generate.add_argument("--seed", type=int, help="default: random; image i uses seed + i")
    generate.add_argument("--size", type=_size, default=(512, 512), metavar="WxH", help="default 512x512")
    generate.add_argument("--count", type=int, default=1, help="images, 1-4")
    generate.add_argument(
        "--out", type=Path, default=Path("outputs"), help="a folder, or a .png file name (default: outputs/)"
    )
    generate.add_argument("--model", help="overrides SDBOT_MODEL")
    doctor = commands.add_parser("doctor", help="check versions, device, model and speed")
    doctor.add_argument("--model", help="overrides SDBOT_MODEL")
    doctor.add_argument("--size", type=_size, default=(512, 512), metavar="WxH", help="test image size")
    commands.add_parser("health", help="exit 0 when the running bot's heartbeat is fresh and it is connected")
    return parser


def _health(settings: Settings) -> int:
    healthy, reason = check_heartbeat(heartbeat_path(settings.db_path), now=time.time())
    print(f"sdbot: {reason}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must look like 512x768, got {text!r}")
    return int(width), int(height)


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    params = JobParams(
        prompt=args.prompt,
        negative_prompt=args.negative,
        steps=args.steps,
        guidance=args.guidance,
        width=args.size[0],
        height=args.size[1],
        seed=args.seed,
        count=args.count,
    )
    if _refused(params):
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
        engine = load_engine(settings)
        [result] = engine.run(Operation.GENERATE, [EngineRequest(params)])
    except (ModelLoadFailed, GenerationFailed) as error:
        print(f"sdbot: {error}", file=sys.stderr)
        return 1
    for image, path in zip(result.images, _output_paths(args.out, result.seeds), strict=True):
        path.write_bytes(image.png)
        flag = {True: "  (flagged NSFW)", False: "", None: "  (not checked: no safety checker)"}[image.nsfw]
        print(f"{path}  seed={image.seed}{flag}")
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


def _doctor(settings: Settings, size: tuple[int, int]) -> int:
    """Print what an admin needs to know before connecting the bot; 1 when the model cannot work."""
    params = JobParams("a photo of a cat", steps=DOCTOR_STEPS, width=size[0], height=size[1], seed=0)
    if _refused(params):
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
    print(f"model         {settings.model}")
    started = time.perf_counter()
    try:
        engine = load_engine(settings)
    except ModelLoadFailed as error:
        print(f"model load    FAILED: {error}")
        return 1
    print(f"model load    ok in {time.perf_counter() - started:.1f} s")
    print(f"device        {engine.device} ({str(engine.dtype).removeprefix('torch.')})")
    for info in engine.models.values():
        print(f"family        {info.profile.label} ({info.profile.pipeline})")
        print(f"safety check  {'yes' if info.checked else 'NO: flags are unknown'}")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        [result] = engine.run(Operation.GENERATE, [EngineRequest(params)])
    except GenerationFailed as error:
        print(f"generation    FAILED: {error}")
        return 1
    timings = result.timings
    print(
        f"generation    {size[0]}x{size[1]}, {DOCTOR_STEPS} steps: {timings.total:.2f} s "
        f"(denoise {timings.denoise:.2f}, decode {timings.decode:.2f}, safety {timings.safety:.2f})"
    )
    if torch.cuda.is_available():
        print(f"peak VRAM     {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
