"""Tiny random-weight pipelines of every family sdbot runs, built offline for tests and benchmarks.

Each has its family's shape where behaviour depends on it (an 8x VAE with four blocks and the family's latent
channels and scaling, the family's text encoders and tokenizers, its denoiser's conditioning) and is small
everywhere else, so it saves to a few MB and runs a step in milliseconds on a CPU. ``TINY_FAMILIES`` maps a
name to the builder that saves one into a folder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from tests.tiny_models.dit import build_flux, build_sd3
from tests.tiny_models.other import build_zimage
from tests.tiny_models.sd import build_sd2, build_tiny_model
from tests.tiny_models.sdxl import build_sdxl

TINY_FAMILIES: dict[str, Callable[[Path], Path]] = {
    "sd1": build_tiny_model,
    "sd2": build_sd2,
    "sdxl": build_sdxl,
    "sd3": build_sd3,
    "flux-schnell": build_flux,
    "flux-dev": functools.partial(build_flux, guidance=True),
    "zimage": build_zimage,  # a family without a table entry (Family.OTHER)
}

__all__ = ["TINY_FAMILIES", "build_tiny_model"]
