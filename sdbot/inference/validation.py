"""Checks on an engine batch, before any work: each failure is a ValueError naming what is allowed.

Each request's parameters keep the engine's limits (``sdbot.params.check_params``); the requests of a batch
share their batch key, since one pipeline call runs one denoising schedule at one size; image-to-image
requests carry their source and strength.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdbot.inference.types import EngineRequest, Operation
from sdbot.params import check_params


def check_batch(operation: Operation, requests: Sequence[EngineRequest]) -> None:
    if not requests:
        raise ValueError("a batch needs at least one request")
    for request in requests:
        check_params(request.params)
        if operation is Operation.GENERATE:
            continue
        if request.source is None:
            raise ValueError(f"a {operation} request needs a source image")
        if request.params.strength is None:
            raise ValueError(f"a {operation} request needs a strength")
    if len({request.params.batch_key() for request in requests}) > 1:
        raise ValueError("requests in one batch must share model, steps, guidance, size (and strength)")
