"""Checks on an engine batch, before any work: each failure is a ValueError naming what is allowed.

A batch is of one model of the engine's library (requests naming none are the default model's). Each
request's parameters keep the engine's limits narrowed by that model's family (``sdbot.params.check_params``
with ``families.model_limits``: its size multiple, whether it takes a negative prompt); the requests of a
batch share their batch key, since one pipeline call runs one model and one denoising schedule at one size;
image-to-image requests carry their source and strength, and need a model whose family has image to image;
an outpaint request, and only it, says how to zoom out or pan, and needs a model with inpainting;
super-resolution runs no schedule, so it takes no strength and needs neither pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sdbot.errors import InvalidRequest
from sdbot.inference.families import model_limits
from sdbot.inference.types import EngineRequest, ModelInfo, Operation
from sdbot.params import ENGINE_LIMITS, check_params


def check_batch(
    operation: Operation, requests: Sequence[EngineRequest], models: Mapping[str, ModelInfo]
) -> str:
    """Check the batch; return the name of its model."""
    if not requests:
        raise ValueError("a batch needs at least one request")
    if len({request.params.batch_key() for request in requests}) > 1:
        raise ValueError(
            "requests in one batch must share model, LoRAs, sampler, steps, guidance, size (and strength)"
        )
    name = requests[0].params.model or next(iter(models))
    info = models.get(name)
    if info is None:
        raise InvalidRequest(f"There is no model {name!r} here; the models are {', '.join(models)}.")
    if operation in (Operation.VARIATION, Operation.UPSCALE) and not info.profile.image_to_image:
        raise InvalidRequest(f"{name} ({info.profile.label}) cannot start from an image.")
    if operation is Operation.OUTPAINT and not info.profile.inpaint:
        raise InvalidRequest(f"{name} ({info.profile.label}) has no inpainting: it cannot zoom out or pan.")
    limits = model_limits(info.profile, ENGINE_LIMITS, name)
    for request in requests:
        check_params(request.params, limits)
        if (request.params.outpaint is not None) != (operation is Operation.OUTPAINT):
            raise ValueError("an outpaint request, and only it, says how to zoom out or pan")
        if operation is Operation.GENERATE:
            continue
        if request.source is None:
            raise ValueError(f"a {operation} request needs a source image")
        if (request.params.strength is None) != (operation is Operation.SUPER_RESOLUTION):
            needs = "takes no" if request.params.strength else "needs a"
            raise ValueError(f"a {operation} request {needs} strength")
    return name
