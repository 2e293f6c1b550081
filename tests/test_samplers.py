"""Samplers: the web UI's names mapped to diffusers schedulers built per call, and read back from a PNG."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sdbot.inference.samplers import (
    DIFFUSION_SAMPLERS,
    FLOW_SAMPLERS,
    describe_scheduler,
    find_sampler,
    samplers_for,
)
from sdbot.inference.scheduling import make_scheduler, scheduler_fields

SD_SCHEDULER = "PNDMScheduler"  # what SD 1.x repositories ship
FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


@pytest.fixture
def pipe(tiny_pipeline):
    """The shared tiny pipeline; its own scheduler is put back after the test."""
    original = tiny_pipeline.scheduler
    yield tiny_pipeline
    tiny_pipeline.scheduler = original


def generate(pipe, sampler, seeds: list[int], prompts: list[str]) -> list[np.ndarray]:
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(original, sampler, seeds)
    try:
        result = pipe(
            prompts,
            num_inference_steps=4,
            width=64,
            height=64,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        )
    finally:
        pipe.scheduler = original
    return [np.asarray(image, dtype=np.int16) for image in result.images]


def test_each_sampler_makes_an_image_of_its_own_and_leaves_the_models_scheduler_alone(pipe) -> None:
    original_config = dict(pipe.scheduler.config)
    images = {}
    for sampler in samplers_for(SD_SCHEDULER):
        scheduler = make_scheduler(pipe.scheduler, sampler, [1])
        assert type(scheduler).__name__ == sampler.scheduler
        assert all(scheduler.config[key] == value for key, value in sampler.options.items())
        assert scheduler.config.beta_schedule == "scaled_linear"  # the model's training schedule is kept
        [images[sampler.name]] = generate(pipe, sampler, [1], ["a red cat"])
    for (a, image_a), (b, image_b) in itertools.combinations(images.items(), 2):
        assert not np.array_equal(image_a, image_b), f"{a} and {b} made the same image"
    assert dict(pipe.scheduler.config) == original_config


def test_dpm_sde_images_are_reproducible_by_seed_alone_in_any_batch(pipe) -> None:
    sampler = find_sampler("DPM++ SDE Karras", scheduler=SD_SCHEDULER)
    [alone] = generate(pipe, sampler, [5], ["a red cat"])
    [again] = generate(pipe, sampler, [5], ["a red cat"])
    _, batched = generate(pipe, sampler, [9, 5], ["a blue dog", "a red cat"])
    assert np.array_equal(alone, again)
    assert np.abs(alone - batched).max() <= 2


@pytest.mark.parametrize(
    ("name", "schedule", "scheduler", "chosen"),
    [
        ("DPM++ 2M", "Karras", SD_SCHEDULER, "DPM++ 2M Karras"),  # the web UI since 1.9
        ("DPM++ 2M Karras", "", SD_SCHEDULER, "DPM++ 2M Karras"),  # and before
        ("DPM++ 2M", "Normal", SD_SCHEDULER, "DPM++ 2M"),
        ("euler a", "", SD_SCHEDULER, "Euler a"),
        ("Euler", "Simple", FLOW_SCHEDULER, "Euler"),
        ("Euler", "Karras", FLOW_SCHEDULER, "Euler Karras"),
        ("DPM++ 2M", "", FLOW_SCHEDULER, None),  # not offered for flow models
        ("PLMS", "", SD_SCHEDULER, None),
    ],
)
def test_a_pngs_sampler_fields_read_back_as_the_sampler_that_wrote_them(
    name: str, schedule: str, scheduler: str, chosen: str | None
) -> None:
    sampler = find_sampler(name, schedule, scheduler=scheduler)
    assert (sampler.name if sampler else None) == chosen
    if sampler is not None:
        assert find_sampler(sampler.label, sampler.schedule_type, scheduler=scheduler) == sampler


def test_a_models_own_scheduler_is_named_as_the_web_ui_names_it(pipe) -> None:
    assert samplers_for(FLOW_SCHEDULER) == FLOW_SAMPLERS
    assert samplers_for("SomeNewScheduler") == ()
    assert scheduler_fields(pipe.scheduler, None) == ("PLMS", "Normal")
    karras = {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2}
    assert describe_scheduler("DPMSolverMultistepScheduler", karras) == ("DPM++ 2M", "Karras")
    assert describe_scheduler("EulerDiscreteScheduler", {"use_karras_sigmas": True}) == ("Euler", "Karras")
    assert describe_scheduler(FLOW_SCHEDULER, {"shift": 3.0}) == ("Euler", "Simple")
    assert {sampler.name for sampler in DIFFUSION_SAMPLERS} >= {
        "Euler",
        "Euler a",
        "DPM++ 2M",
        "DPM++ 2M Karras",
        "DPM++ SDE Karras",
        "DPM++ 2M SDE",
        "DDIM",
        "UniPC",
        "LCM",
    }
