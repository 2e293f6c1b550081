"""What the CPU benchmarks on tiny models share: their queue options, and a quiet torch on one thread."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging


def parse_queue_args(description: str, argv: Sequence[str] | None, rounds: str) -> argparse.Namespace:
    """``--jobs``, ``--rounds`` (``rounds``: what a round is), ``--steps`` and ``--size``, checked."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=12, help="jobs per queue (default 12)")
    parser.add_argument("--rounds", type=int, default=3, help=f"{rounds} (default 3)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per job (default 4)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.rounds < 1 or args.steps < 1 or args.size < 64 or args.size % 8:
        parser.error(
            "--jobs must be at least 2, --rounds and --steps at least 1, --size a multiple of 8 >= 64"
        )
    return args


def quiet_single_thread() -> None:
    """No progress bars, no warning that the tiny models are unchecked (it is known), and one torch thread:
    for tiny tensors a second one only adds waiting on a busy machine."""
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)
    logging.getLogger("sdbot").setLevel(logging.ERROR)
