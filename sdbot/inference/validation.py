"""Checks on engine requests, before any work: each failure is a ValueError naming what is allowed.

A batch must share its batch key (steps, guidance, size and, for img2img, strength): one pipeline call
runs one denoising schedule at one size.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdbot.inference.types import (
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_COUNT,
    MIN_GUIDANCE,
    MIN_SIDE,
    MIN_STEPS,
    GenerateRequest,
    ImageToImageRequest,
)


def check_generate(requests: Sequence[GenerateRequest]) -> None:
    _check_not_empty(requests)
    for request in requests:
        if not request.prompt.strip():
            raise ValueError("prompt must not be empty")
        _check_common(request.steps, request.guidance, request.seed)
        _check_side("width", request.width)
        _check_side("height", request.height)
        if not MIN_COUNT <= request.count <= MAX_COUNT:
            raise ValueError(f"count must be from {MIN_COUNT} to {MAX_COUNT}, got {request.count}")
    _check_same_key([(r.steps, r.guidance, r.width, r.height) for r in requests])


def check_image_to_image(requests: Sequence[ImageToImageRequest], *, scale: int) -> None:
    """``scale``: how much the engine enlarges each source first (1 for variations)."""
    _check_not_empty(requests)
    for request in requests:
        _check_common(request.steps, request.guidance, request.seed)
        if not 0 < request.strength <= 1:
            raise ValueError(f"strength must be above 0 and at most 1, got {request.strength}")
        if int(request.steps * request.strength) < 1:
            raise ValueError(
                f"steps {request.steps} at strength {request.strength:g} leave no denoising step: "
                f"use at least {_min_steps(request.strength)} steps"
            )
        width, height = request.source.size
        _check_side("output width", width * scale)
        _check_side("output height", height * scale)
    _check_same_key([(r.steps, r.guidance, r.strength, r.source.size) for r in requests])


def _check_not_empty(requests: Sequence[object]) -> None:
    if not requests:
        raise ValueError("a batch needs at least one request")


def _check_common(steps: int, guidance: float, seed: int | None) -> None:
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be from {MIN_STEPS} to {MAX_STEPS}, got {steps}")
    if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance must be from {MIN_GUIDANCE:g} to {MAX_GUIDANCE:g}, got {guidance:g}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be from 0 to {MAX_SEED}, got {seed}")


def _check_side(name: str, value: int) -> None:
    if not MIN_SIDE <= value <= MAX_SIDE or value % 8:
        raise ValueError(f"{name} must be a multiple of 8 from {MIN_SIDE} to {MAX_SIDE}, got {value}")


def _check_same_key(keys: list[tuple[object, ...]]) -> None:
    if len(set(keys)) > 1:
        raise ValueError("requests in one batch must share steps, guidance, size (and strength)")


def _min_steps(strength: float) -> int:
    steps = 1
    while int(steps * strength) < 1:
        steps += 1
    return steps
