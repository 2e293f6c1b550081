"""A scheduler for each pipeline call, built from the model's own scheduler config.

Schedulers keep state between steps (a multistep solver's past outputs, the step index, an SDE's noise
sampler), so the engine never reuses one across calls: each call gets a new one, either the model's own class
or a chosen ``Sampler``'s, made with ``from_config`` from the config the model was loaded with. Building one
reads no weights and takes about a millisecond, so switching samplers between batches costs nothing and
cannot touch another call's images.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import diffusers
from diffusers import SchedulerMixin

from sdbot.inference.samplers import Sampler, describe_scheduler


def make_scheduler(original: SchedulerMixin, sampler: Sampler | None, seeds: Sequence[int]) -> SchedulerMixin:
    """A fresh scheduler for one call: ``sampler``'s on ``original``'s config, or ``original``'s own class.

    ``seeds`` are the call's image seeds: a scheduler that draws its noise from a seeded sampler of its own
    (DPM++ SDE's Brownian tree) gets one seed per image, so that each image is reproducible by its seed
    alone, as the pipeline's per-image generators make it for the others."""
    scheduler_class = type(original) if sampler is None else getattr(diffusers, sampler.scheduler)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    # Only the keys the class takes: another class's keys would be logged as ignored on every call.
    config = {key: value for key, value in original.config.items() if key in accepted}
    if sampler is not None:
        config.update(sampler.options)
    if "noise_sampler_seed" in accepted:
        config["noise_sampler_seed"] = list(seeds)
    return scheduler_class.from_config(config)


def scheduler_fields(scheduler: SchedulerMixin, sampler: Sampler | None) -> tuple[str, str]:
    """The PNG's ``Sampler`` and ``Schedule type`` of a call that ran ``scheduler`` (made for ``sampler``)."""
    if sampler is not None:
        return sampler.label, sampler.schedule_type
    return describe_scheduler(type(scheduler).__name__, dict(scheduler.config))
