"""One loaded model running one batch: the pipeline call its family needs, then decoding, the safety check
and the PNGs.

One call is one pipeline run over every image of every request in the batch (``sdbot.inference.batch``
plans it). Each image has its own seeded generator (image ``i`` of a request uses ``seed + i``), so an
image's pixels depend only on its own request: reproducible alone, and the same whether batched with others
or not. The pipeline returns latents; the runner decodes them (``sdbot.inference.latents``) and runs the
safety checker itself, so a flagged image keeps its pixels. A family without a table entry decodes in its own
pipeline (its latent layout is its own). Progress, previews and cancellation go through diffusers'
``callback_on_step_end``.

What the call passes depends on the profile and on what the pipeline's ``__call__`` takes: the guidance scale
under the family's name for it, a negative prompt only where the family has one, the T5 window
(``max_sequence_length``: 256 for Flux schnell, 512 for dev), and the size for the image-to-image pipelines
that take one (Flux's, SD3's) besides the source.

Zoom Out and Pan run the family's inpainting pipeline on the canvas the batch was planned with, and the
source's own pixels are put back after decoding. Upscale
(Subtle) runs no pipeline: the super-resolution upscaler enlarges each source, and the model's safety checker
and PNG parameters follow as for any image.
"""

from __future__ import annotations

import functools
import inspect
import time

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from sdbot.errors import GenerationCancelled
from sdbot.inference.batch import Batch
from sdbot.inference.extras import ModelExtras, PreparedBatch
from sdbot.inference.families import Family, Size
from sdbot.inference.latents import decode_to_images, spatial
from sdbot.inference.pipelines import ModelPipelines
from sdbot.inference.previews import PreviewMaker, preview_interval
from sdbot.inference.results import ResultWriter
from sdbot.inference.types import (
    UPSCALE_FACTOR,
    CancelCheck,
    GenerationResult,
    ModelInfo,
    Operation,
    Progress,
    ProgressCallback,
    Timings,
)
from sdbot.inference.upscalers import Upscaler


class ModelRunner:
    """Runs batches on one model (``model``: its pipelines, profile and checker), named ``name`` in PNGs
    (with ``model_hash`` when it is a checkpoint file). Not thread-safe: the engine serialises calls."""

    def __init__(
        self,
        name: str,
        model: ModelPipelines,
        extras: ModelExtras,
        *,
        previews: PreviewMaker | None,
        tile_upscales: bool,
        model_hash: str | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.extras = extras
        self._previews = previews
        self._tile_upscales = tile_upscales
        self._writer = ResultWriter(name, model.safety, model_hash)
        for pipe in (model.text_to_image, model.image_to_image, model.inpaint):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)

    @property
    def info(self) -> ModelInfo:
        extras = self.extras
        return ModelInfo(
            self.name,
            self.model.profile,
            self._writer.checks_safety,
            samplers=tuple(sampler.name for sampler in extras.samplers),
            own_sampler=" ".join(dict.fromkeys(extras.own_sampler)),
            tokenizer=extras.tokenizer,
        )

    def run(
        self,
        batch: Batch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        *,
        switch: float = 0.0,
    ) -> list[GenerationResult]:
        """Run ``batch``; ``switch``: seconds spent bringing the model onto the device, for the timings."""
        pipe = {
            Operation.GENERATE: self.model.text_to_image,
            Operation.OUTPAINT: self.model.inpaint,
        }.get(batch.operation, self.model.image_to_image)
        if pipe is None:
            raise ValueError(f"{self.info.profile.label} models have no pipeline to {batch.operation}")
        started = time.perf_counter()
        prepared = self.extras.prepare(batch.params, batch.images)
        # counted in the first call's timings: the model's switch, the LoRAs' and the prompts' encoding
        before = Timings(
            switch=switch, loras=prepared.lora_seconds, total=switch + time.perf_counter() - started
        )
        groups = prepared.groups(batch.request_images())
        results: list[GenerationResult] = [GenerationResult([])] * batch.request_count
        tile = self._tile_upscales and batch.operation is Operation.UPSCALE
        if tile:
            pipe.vae.enable_tiling()  # the VAE's memory grows with the area
        try:
            for group in groups:
                part = batch if len(groups) == 1 else batch.only(group)
                for request, result in zip(
                    group, self._run(pipe, part, prepared, on_progress, should_cancel, before), strict=True
                ):
                    results[request] = result
                before = Timings()
        finally:
            if tile:
                pipe.vae.disable_tiling()
        return results

    @torch.no_grad()
    def _run(
        self,
        pipe: DiffusionPipeline,
        batch: Batch,
        prepared: PreparedBatch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        before: Timings,
    ) -> list[GenerationResult]:
        """One pipeline call; ``before``: what readying it cost (counted in its timings)."""
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
            **self._call_options(pipe, batch, prepared),
            output_type="latent" if decode_here else "pil",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        ).images
        if step_end.cancelled_at is not None:
            raise GenerationCancelled(f"cancelled after step {step_end.cancelled_at} of {step_end.total}")
        denoised = time.perf_counter()
        pictures = decode_to_images(pipe, self.model.profile, output, batch.size) if decode_here else output
        if batch.outpaints is not None:
            pictures = [
                plan.keep_source(picture, source)
                for (plan, source), picture in zip(batch.outpaints, pictures, strict=True)
            ]
        decoded = time.perf_counter()
        flags = self._writer.flags(pictures)
        checked = time.perf_counter()
        timings = Timings(
            switch=before.switch,
            loras=before.loras,
            denoise=denoised - started,
            decode=decoded - denoised,
            safety=checked - decoded,
            total=before.total + time.perf_counter() - started,
        )
        return self._writer.results(batch, prepared, pictures, flags, timings)

    @torch.no_grad()
    def super_resolve(
        self,
        batch: Batch,
        upscaler: Upscaler,
        on_progress: ProgressCallback | None,
        *,
        switch: float = 0.0,
    ) -> list[GenerationResult]:
        """Upscale (Subtle): each source enlarged by ``upscaler`` to the batch's size, no diffusion; checked
        and saved with its parameters and the upscaler's name, as AUTOMATIC1111's extras tab writes them."""
        assert batch.sources is not None  # Batch.plan keeps each picture as it is
        started = time.perf_counter()
        pictures = []
        for done, source in enumerate(batch.sources, start=1):
            picture = upscaler.upscale(source, UPSCALE_FACTOR)
            if picture.size != batch.size:  # the size multiple cut a few pixels
                picture = picture.resize(batch.size, Image.Resampling.LANCZOS)
            pictures.append(picture)
            if on_progress is not None:
                on_progress(Progress(done, len(batch.sources)))
        upscaled = time.perf_counter()
        flags = self._writer.flags(pictures)
        checked = time.perf_counter()
        timings = Timings(
            switch=switch,
            denoise=upscaled - started,
            safety=checked - upscaled,
            total=switch + checked - started,
        )
        extra = {"Postprocess upscaler": upscaler.name, "Postprocess upscale by": str(UPSCALE_FACTOR)}
        return self._writer.results(
            batch, self.extras.describe(batch.params), pictures, flags, timings, extra
        )

    def _call_options(
        self, pipe: DiffusionPipeline, batch: Batch, prepared: PreparedBatch
    ) -> dict[str, object]:
        profile, params = self.model.profile, batch.params
        accepted = _call_parameters(type(pipe))
        options: dict[str, object] = {
            **prepared.call_options(pipe, batch.images),
            "num_inference_steps": params.steps,
            profile.guidance_parameter: params.guidance,
            # CPU generators: the same seed gives the same starting noise on every device.
            "generator": [torch.Generator("cpu").manual_seed(image.seed) for image in batch.images],
        }
        if "max_sequence_length" in accepted:
            options["max_sequence_length"] = profile.prompt_tokens
        if batch.sources is None or "width" in accepted:
            options |= {"width": params.width, "height": params.height}
        if batch.sources is not None:
            options |= {"image": batch.sources, "strength": params.strength}
        if batch.masks is not None:
            options["mask_image"] = batch.masks
        return options

    def _render_previews(self, size: Size, firsts: list[int], latents: torch.Tensor) -> list[Image.Image]:
        assert self._previews is not None
        pipe = self.model.text_to_image
        return self._previews(spatial(latents[firsts], self.model.profile, size, pipe.vae_scale_factor))


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
