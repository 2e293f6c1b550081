"""One pipeline call of a model over a batch: what it passes, what happens at each step, and the pictures it
ends with.

One call is one pipeline run over every image of the batch's requests (``ModelRunner`` splits a batch into
calls whose prompts encode to one length). Each image has its own seeded generator (image ``i`` of a request
uses ``seed + i``), so an image's pixels depend only on its own request: reproducible alone, and the same
whether batched with others or not. The pipeline returns latents, decoded here (``sdbot.inference.latents``)
so that the safety checker runs on them afterwards and a flagged image keeps its pixels; a family without a
table entry decodes in its own pipeline (its latent layout is its own). Progress, previews and cancellation go
through diffusers' ``callback_on_step_end``.

What the call passes depends on the profile and on what the pipeline's ``__call__`` takes: the guidance scale
under the family's name for it, a negative prompt only where the family has one, the T5 window
(``max_sequence_length``: 256 for Flux schnell, 512 for dev), and the size for the image-to-image pipelines
that take one (Flux's, SD3's) besides the source. Zoom Out and Pan run the family's inpainting pipeline on the
canvas the batch was planned with, and the source's own pixels are put back after decoding.
"""

from __future__ import annotations

import functools
import inspect
from typing import cast

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from sdbot.errors import GenerationCancelled
from sdbot.inference.batch import Batch
from sdbot.inference.extras import PreparedBatch
from sdbot.inference.families import Family, Size
from sdbot.inference.latents import decode_to_images, spatial
from sdbot.inference.pipelines import ModelPipelines
from sdbot.inference.previews import PreviewMaker, preview_interval
from sdbot.inference.types import CancelCheck, Progress, ProgressCallback


class Diffusion:
    """Runs ``model``'s pipelines over a batch, with ``previews`` of the images as they form (None: none),
    and turns what they return into pictures. Kept apart from ``ModelRunner``, which decides what to call
    and times it: this is how one call is made."""

    def __init__(self, model: ModelPipelines, previews: PreviewMaker | None) -> None:
        self._model = model
        self._previews = previews

    @property
    def _decodes_latents(self) -> bool:
        """Whether the pipeline hands back latents for ``decode`` (a family without a table entry decodes in
        its own pipeline)."""
        return self._model.profile.family is not Family.OTHER

    def denoise(
        self,
        pipe: DiffusionPipeline,
        batch: Batch,
        prepared: PreparedBatch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
    ) -> torch.Tensor | list[Image.Image]:
        """Run ``pipe`` over ``batch``: its latents (its pictures for a family that decodes them itself).
        Raises ``GenerationCancelled`` when ``should_cancel`` stopped it."""
        firsts = [
            next(i for i, image in enumerate(batch.images) if image.request == r)
            for r in range(batch.request_count)
        ]
        render = (
            None if self._previews is None else functools.partial(self._render_previews, batch.size, firsts)
        )
        step_end = _StepHook(on_progress, should_cancel, render)
        output = pipe(
            **self._call_options(pipe, batch, prepared),
            output_type="latent" if self._decodes_latents else "pil",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        ).images
        if step_end.cancelled_at is not None:
            raise GenerationCancelled(f"cancelled after step {step_end.cancelled_at} of {step_end.total}")
        return output

    def decode(
        self, pipe: DiffusionPipeline, batch: Batch, output: torch.Tensor | list[Image.Image]
    ) -> list[Image.Image]:
        """The pictures of ``denoise``'s ``output``, an outpainting's source pixels back in place."""
        if self._decodes_latents:  # denoise asked the pipeline for latents
            pictures = decode_to_images(pipe, self._model.profile, cast(torch.Tensor, output), batch.size)
        else:
            pictures = cast(list[Image.Image], output)
        if batch.outpaints is not None:
            pictures = [
                plan.keep_source(picture, source)
                for (plan, source), picture in zip(batch.outpaints, pictures, strict=True)
            ]
        return pictures

    def _call_options(
        self, pipe: DiffusionPipeline, batch: Batch, prepared: PreparedBatch
    ) -> dict[str, object]:
        profile, params = self._model.profile, batch.params
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
        pipe = self._model.text_to_image
        return self._previews(spatial(latents[firsts], self._model.profile, size, pipe.vae_scale_factor))


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
        self, pipe: DiffusionPipeline, index: int, timestep: torch.Tensor, tensors: dict[str, torch.Tensor]
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
