"""One loaded model running one batch: the pipeline call its family needs, then decoding, the safety check
and the PNGs.

One call is one pipeline run over every image of every request in the batch. Each image has its own seeded
generator (image ``i`` of a request uses ``seed + i``), so an image's pixels depend only on its own request:
reproducible alone, and the same whether batched with others or not. The pipeline returns latents; the
runner decodes them (``sdbot.inference.latents``) and runs the safety checker itself, so a flagged image keeps
its pixels. A family without a table entry decodes in its own pipeline (its latent layout is its own).
Progress, previews and cancellation go through diffusers' ``callback_on_step_end``.

What the call passes depends on the profile and on what the pipeline's ``__call__`` takes: the guidance scale
under the family's name for it, a negative prompt only where the family has one, the T5 window
(``max_sequence_length``: 256 for Flux schnell, 512 for dev), and the size for the image-to-image pipelines
that take one (Flux's, SD3's) besides the source.
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from sdbot.errors import GenerationCancelled
from sdbot.inference.families import Family, Size
from sdbot.inference.latents import decode_to_images, spatial
from sdbot.inference.pipelines import ModelPipelines
from sdbot.inference.pngmeta import ImageParameters, encode_png, sampler_name
from sdbot.inference.previews import PreviewMaker, preview_interval
from sdbot.inference.safety import SafetyCheck
from sdbot.inference.types import (
    CancelCheck,
    EngineRequest,
    GeneratedImage,
    GenerationResult,
    ModelInfo,
    Operation,
    Progress,
    ProgressCallback,
    Timings,
)
from sdbot.params import JobParams, image_seed, random_seed


@dataclass(frozen=True)
class PlannedImage:
    """One image of a batch: the request it belongs to and its own seed."""

    request: int
    prompt: str
    negative_prompt: str
    seed: int


@dataclass(frozen=True)
class Batch:
    """One pipeline run: its images, the parameters they share (``params``: the first request's; the batch
    key is the same for all) and, for image to image, each image's source at the output size."""

    operation: Operation
    images: list[PlannedImage]
    request_count: int
    params: JobParams
    sources: list[Image.Image] | None = None

    @property
    def size(self) -> Size:
        return Size(self.params.width, self.params.height)

    @classmethod
    def plan(cls, operation: Operation, requests: list[EngineRequest]) -> Batch:
        """Flatten the requests into images (drawing missing seeds) and prepare their sources."""
        images = []
        for index, request in enumerate(requests):
            params = request.params
            base = params.seed if params.seed is not None else random_seed()
            images.extend(
                PlannedImage(index, params.prompt, params.negative_prompt, image_seed(base, i))
                for i in range(params.count)
            )
        sources = None
        if operation is not Operation.GENERATE:
            prepared = [_prepared_source(request) for request in requests]
            sources = [prepared[image.request] for image in images]
        return cls(operation, images, len(requests), requests[0].params, sources)


class ModelRunner:
    """Runs batches on one model (``model``: its pipelines, profile and checker), named ``name`` in PNGs
    (with ``model_hash`` when it is a checkpoint file). Not thread-safe: the engine serialises calls."""

    def __init__(
        self,
        name: str,
        model: ModelPipelines,
        *,
        previews: PreviewMaker | None,
        tile_upscales: bool,
        model_hash: str | None = None,
    ) -> None:
        self.name = name
        self.model = model
        # what the PNGs say besides the model's name: A1111's hash of a checkpoint file
        self._png_extra = {} if model_hash is None else {"Model hash": model_hash}
        self._previews = previews
        self._tile_upscales = tile_upscales
        safety = model.safety
        self._safety = None if safety is None else SafetyCheck(safety.checker, safety.feature_extractor)
        for pipe in (model.text_to_image, model.image_to_image, model.inpaint):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.model.profile, self._safety is not None)

    def run(
        self,
        batch: Batch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        *,
        switch: float = 0.0,
    ) -> list[GenerationResult]:
        """Run ``batch``; ``switch``: seconds spent bringing the model onto the device, for the timings."""
        pipe = (
            self.model.text_to_image if batch.operation is Operation.GENERATE else self.model.image_to_image
        )
        if pipe is None:
            raise ValueError(f"{self.info.profile.label} models have no image-to-image pipeline")
        tile = self._tile_upscales and batch.operation is Operation.UPSCALE
        if tile:
            pipe.vae.enable_tiling()  # the VAE's memory grows with the area
        try:
            return self._run(pipe, batch, on_progress, should_cancel, switch)
        finally:
            if tile:
                pipe.vae.disable_tiling()

    @torch.no_grad()
    def _run(
        self,
        pipe: DiffusionPipeline,
        batch: Batch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        switch: float,
    ) -> list[GenerationResult]:
        started = time.perf_counter()
        firsts = [
            next(i for i, image in enumerate(batch.images) if image.request == r)
            for r in range(batch.request_count)
        ]
        render = (
            None if self._previews is None else functools.partial(self._render_previews, batch.size, firsts)
        )
        step_end = _StepHook(on_progress, should_cancel, render)
        decode_here = self.model.profile.family is not Family.OTHER
        output = pipe(
            **self._call_options(pipe, batch),
            output_type="latent" if decode_here else "pil",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        ).images
        if step_end.cancelled_at is not None:
            raise GenerationCancelled(f"cancelled after step {step_end.cancelled_at} of {step_end.total}")
        denoised = time.perf_counter()
        pictures = decode_to_images(pipe, self.model.profile, output, batch.size) if decode_here else output
        decoded = time.perf_counter()
        flags: list[bool | None] = list(self._safety(pictures)) if self._safety else [None] * len(pictures)
        checked = time.perf_counter()
        timings = Timings(
            switch=switch,
            denoise=denoised - started,
            decode=decoded - denoised,
            safety=checked - decoded,
            total=switch + time.perf_counter() - started,
        )
        return self._results(pipe, batch, pictures, flags, timings)

    def _call_options(self, pipe: DiffusionPipeline, batch: Batch) -> dict[str, object]:
        profile, params = self.model.profile, batch.params
        accepted = _call_parameters(type(pipe))
        options: dict[str, object] = {
            "prompt": [image.prompt for image in batch.images],
            "num_inference_steps": params.steps,
            profile.guidance_parameter: params.guidance,
            # CPU generators: the same seed gives the same starting noise on every device.
            "generator": [torch.Generator("cpu").manual_seed(image.seed) for image in batch.images],
        }
        if profile.negative_prompt:
            options["negative_prompt"] = [image.negative_prompt for image in batch.images]
        if "max_sequence_length" in accepted:
            options["max_sequence_length"] = profile.prompt_tokens
        if batch.sources is None or "width" in accepted:
            options |= {"width": params.width, "height": params.height}
        if batch.sources is not None:
            options |= {"image": batch.sources, "strength": params.strength}
        return options

    def _render_previews(self, size: Size, firsts: list[int], latents: torch.Tensor) -> list[Image.Image]:
        assert self._previews is not None
        pipe = self.model.text_to_image
        return self._previews(spatial(latents[firsts], self.model.profile, size, pipe.vae_scale_factor))

    def _results(
        self,
        pipe: DiffusionPipeline,
        batch: Batch,
        pictures: list[Image.Image],
        flags: list[bool | None],
        timings: Timings,
    ) -> list[GenerationResult]:
        results: list[list[GeneratedImage]] = [[] for _ in range(batch.request_count)]
        sampler = sampler_name(type(pipe.scheduler).__name__)
        params = batch.params
        for image, picture, flag in zip(batch.images, pictures, flags, strict=True):
            written = ImageParameters(
                prompt=image.prompt,
                negative_prompt=image.negative_prompt,
                steps=params.steps,
                sampler=sampler,
                guidance=params.guidance,
                seed=image.seed,
                width=params.width,
                height=params.height,
                model=self.name,
                strength=params.strength,
                extra=self._png_extra,
            )
            results[image.request].append(
                GeneratedImage(picture, image.seed, flag, encode_png(picture, written))
            )
        return [GenerationResult(request_images, timings) for request_images in results]


class _StepHook:
    """``callback_on_step_end``: reports progress and previews, and interrupts the pipeline on cancel."""

    def __init__(
        self,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        render: functools.partial[list[Image.Image]] | None,
    ) -> None:
        self._on_progress = on_progress
        self._should_cancel = should_cancel
        self._render = render
        self.total = 0
        self.cancelled_at: int | None = None

    def __call__(
        self, pipe, index: int, timestep, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        step, self.total = index + 1, pipe.num_timesteps
        if self._on_progress is not None:
            make_previews = None
            if self._render is not None and step < self.total and step % preview_interval(self.total) == 0:
                make_previews = functools.partial(self._render, tensors["latents"])
            self._on_progress(Progress(step, self.total, make_previews))
        if self._should_cancel is not None and self._should_cancel():
            pipe._interrupt = True  # diffusers skips the remaining steps
            self.cancelled_at = step
        return tensors


@functools.cache
def _call_parameters(pipeline_class: type[DiffusionPipeline]) -> frozenset[str]:
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def _prepared_source(request: EngineRequest) -> Image.Image:
    """The source in RGB at the request's size (an upscale's is twice the source's)."""
    assert request.source is not None  # check_batch made sure
    source = request.source.convert("RGB")
    if source.size == request.params.size:
        return source
    return source.resize(request.params.size, Image.Resampling.LANCZOS)
