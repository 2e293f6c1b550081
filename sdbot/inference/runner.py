"""One loaded model running one batch: which pipeline, how many calls, and what each phase cost.

A batch (``sdbot.inference.batch``) runs on the model's pipeline for its operation: text to image, image to
image, or inpainting for Zoom Out and Pan. Its LoRAs and prompts are readied once
(``sdbot.inference.extras``), then it runs in as few pipeline calls as its prompts allow (those that encode
to one length share a call), each made by ``sdbot.inference.diffusion``, its pictures flagged and written as
PNGs by ``sdbot.inference.results``. Each result carries the timings of its call: the model's switch and the
LoRAs (counted in the first call), denoising, decoding, the safety check. Upscale (Subtle) runs no pipeline:
the super-resolution upscaler enlarges each source, and the model's safety checker and PNG parameters follow
as for any image.
"""

from __future__ import annotations

import time

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from sdbot.inference.batch import Batch
from sdbot.inference.diffusion import Diffusion
from sdbot.inference.extras import ModelExtras, PreparedBatch
from sdbot.inference.pipelines import ModelPipelines
from sdbot.inference.previews import PreviewMaker
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
        self._diffusion = Diffusion(model, previews)
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
        output = self._diffusion.denoise(pipe, batch, prepared, on_progress, should_cancel)
        denoised = time.perf_counter()
        pictures = self._diffusion.decode(pipe, batch, output)
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
