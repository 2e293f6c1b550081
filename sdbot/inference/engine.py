"""The in-process diffusers engine: batches of requests in, PNGs with seeds, NSFW flags and timings out.

One engine call is one pipeline run over every image of every request in the batch. Each image has its
own seeded generator (image ``i`` of a request uses ``seed + i``), so an image's pixels depend only on its
own request: reproducible alone, and the same whether batched with others or not. The pipeline returns
latents; the engine decodes them and runs the safety checker itself, so a flagged image keeps its pixels.
Progress, previews and cancellation go through diffusers' ``callback_on_step_end``.

Calls block. The engine serialises them with a lock, so one worker thread (or several) may call it.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from sdbot.config import Settings
from sdbot.errors import GenerationCancelled, GenerationFailed
from sdbot.inference import loading
from sdbot.inference.pngmeta import ImageParameters, encode_png, sampler_name
from sdbot.inference.previews import LinearPreview, PreviewMaker, TinyDecoderPreview, preview_interval
from sdbot.inference.safety import SafetyCheck
from sdbot.inference.types import (
    CancelCheck,
    EngineRequest,
    GeneratedImage,
    GenerationResult,
    Operation,
    Progress,
    ProgressCallback,
    Timings,
)
from sdbot.inference.validation import check_batch
from sdbot.params import MAX_COUNT, JobParams, image_seed, random_seed

log = logging.getLogger(__name__)

WARM_UP_STEPS = 2


@dataclass(frozen=True)
class _Image:
    """One image of a batch: the request it belongs to and its own seed."""

    request: int
    prompt: str
    negative_prompt: str
    seed: int


@dataclass(frozen=True)
class _Batch:
    """One pipeline run: its images and the parameters they share (``params``: the first request's; the
    batch key is the same for all)."""

    images: list[_Image]
    request_count: int
    params: JobParams
    pipe_kwargs: dict[str, object]
    tile_vae: bool = False  # encode and decode in tiles (upscales: the VAE's memory grows with the area)


class DiffusersEngine:
    """Runs SD 1.x/2.x pipelines. Build it with ``load_engine``; tests may pass a pipeline directly."""

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        *,
        model_name: str,
        previews: PreviewMaker | None = None,
        tile_upscales: bool = True,
    ) -> None:
        self._txt2img = pipe
        # Built on the text-to-image pipeline's modules: no second copy of the weights. (Not ``from_pipe``,
        # which casts the shared modules to its ``torch_dtype``, float32 unless told otherwise.)
        self._img2img = StableDiffusionImg2ImgPipeline(
            **pipe.components, requires_safety_checker=pipe.config.requires_safety_checker
        )
        self._model_name = model_name
        self._previews = previews or LinearPreview()
        self._tile_upscales = tile_upscales
        self._lock = threading.Lock()
        self._safety = None
        if pipe.safety_checker is not None and pipe.feature_extractor is not None:
            self._safety = SafetyCheck(pipe.safety_checker, pipe.feature_extractor, self.device, self.dtype)
        else:
            log.warning(
                "model %s has no safety checker: NSFW flags are unknown and SDBOT_UNCHECKED_POLICY applies",
                model_name,
            )
        for pipeline in (self._txt2img, self._img2img):
            pipeline.set_progress_bar_config(disable=True)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def has_safety_checker(self) -> bool:
        return self._safety is not None

    @property
    def device(self) -> torch.device:
        return self._txt2img._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self._txt2img.unet.dtype

    @property
    def pipelines(self) -> tuple[StableDiffusionPipeline, StableDiffusionImg2ImgPipeline]:
        """The text-to-image and image-to-image pipelines (they share their modules)."""
        return self._txt2img, self._img2img

    def run(
        self,
        operation: Operation,
        requests: Sequence[EngineRequest],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[GenerationResult]:
        check_batch(operation, requests)
        first = requests[0].params
        images = _plan([request.params for request in requests])
        if operation is Operation.GENERATE:
            pipe: StableDiffusionPipeline | StableDiffusionImg2ImgPipeline = self._txt2img
            pipe_kwargs: dict[str, object] = {"width": first.width, "height": first.height}
        else:
            pipe = self._img2img
            sources = [_prepared_source(request.source, request.params) for request in requests]
            pipe_kwargs = {"image": [sources[image.request] for image in images], "strength": first.strength}
        batch = _Batch(
            images=images,
            request_count=len(requests),
            params=first,
            pipe_kwargs=pipe_kwargs,
            tile_vae=self._tile_upscales and operation is Operation.UPSCALE,
        )
        return self._run(pipe, batch, on_progress, should_cancel)

    def warm_up(self, width: int = 512, height: int = 512, batch_sizes: Sequence[int] = (1,)) -> float:
        """Short generations at each batch size, so that compilation and allocator growth happen before the
        first user waits. After two sizes torch.compile makes the batch dimension dynamic, so warming up 1
        and the largest batch covers the sizes between. Returns the seconds taken."""
        started = time.perf_counter()
        for images in batch_sizes:
            counts = [min(MAX_COUNT, images - first) for first in range(0, images, MAX_COUNT)]
            params = JobParams("warm-up", steps=WARM_UP_STEPS, width=width, height=height, seed=0)
            self.run(Operation.GENERATE, [EngineRequest(replace(params, count=n)) for n in counts])
        return time.perf_counter() - started

    def _run(
        self,
        pipe: StableDiffusionPipeline | StableDiffusionImg2ImgPipeline,
        batch: _Batch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
    ) -> list[GenerationResult]:
        with self._lock:
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled("cancelled before it started")
            if batch.tile_vae:
                pipe.vae.enable_tiling()
            try:
                return self._run_locked(pipe, batch, on_progress, should_cancel)
            except RuntimeError as error:
                if not _is_out_of_memory(error):
                    raise
                # The traceback keeps every frame of the failed run alive, and with them its tensors: let
                # those go, so that emptying the cache hands their memory back.
                traceback.clear_frames(error.__traceback__)
                _free_memory()
                raise GenerationFailed(
                    "out of GPU memory: try fewer images or a smaller size "
                    "(admins: SDBOT_OFFLOAD and SDBOT_ATTENTION_SLICING lower memory use)"
                ) from error
            finally:
                if batch.tile_vae:
                    pipe.vae.disable_tiling()

    @torch.no_grad()
    def _run_locked(
        self,
        pipe: StableDiffusionPipeline | StableDiffusionImg2ImgPipeline,
        batch: _Batch,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
    ) -> list[GenerationResult]:
        started = time.perf_counter()
        images = batch.images
        # CPU generators: the same seed gives the same starting noise on every device.
        generators = [torch.Generator("cpu").manual_seed(image.seed) for image in images]
        firsts = [
            next(i for i, image in enumerate(images) if image.request == r)
            for r in range(batch.request_count)
        ]
        step_end = _StepHook(on_progress, should_cancel, self._previews, firsts)
        latents = pipe(
            prompt=[image.prompt for image in images],
            negative_prompt=[image.negative_prompt for image in images],
            num_inference_steps=batch.params.steps,
            guidance_scale=batch.params.guidance,
            generator=generators,
            output_type="latent",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
            **batch.pipe_kwargs,
        ).images
        if step_end.cancelled_at is not None:
            raise GenerationCancelled(f"cancelled after step {step_end.cancelled_at} of {step_end.total}")
        denoised = time.perf_counter()
        pictures = self._decode(latents)
        decoded = time.perf_counter()
        flags: list[bool | None] = list(self._safety(pictures)) if self._safety else [None] * len(pictures)
        checked = time.perf_counter()
        results: list[list[GeneratedImage]] = [[] for _ in range(batch.request_count)]
        sampler = sampler_name(type(pipe.scheduler).__name__)
        for image, picture, flag in zip(images, pictures, flags, strict=True):
            params = ImageParameters(
                prompt=image.prompt,
                negative_prompt=image.negative_prompt,
                steps=batch.params.steps,
                sampler=sampler,
                guidance=batch.params.guidance,
                seed=image.seed,
                width=batch.params.width,
                height=batch.params.height,
                model=self._model_name,
                strength=batch.params.strength,
            )
            results[image.request].append(
                GeneratedImage(picture, image.seed, flag, encode_png(picture, params))
            )
        timings = Timings(
            denoise=denoised - started,
            decode=decoded - denoised,
            safety=checked - decoded,
            total=time.perf_counter() - started,
        )
        return [GenerationResult(request_images, timings) for request_images in results]

    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self._txt2img.vae
        scaled = latents / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            scaled = scaled + vae.config.shift_factor
        decoded = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
        return self._txt2img.image_processor.postprocess(decoded, output_type="pil")


class _StepHook:
    """``callback_on_step_end``: reports progress and previews, and interrupts the pipeline on cancel."""

    def __init__(
        self,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        previews: PreviewMaker,
        firsts: list[int],
    ) -> None:
        self._on_progress = on_progress
        self._should_cancel = should_cancel
        self._previews = previews
        self._firsts = firsts
        self.total = 0
        self.cancelled_at: int | None = None

    def __call__(
        self, pipe, index: int, timestep, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        step, self.total = index + 1, pipe.num_timesteps
        if self._on_progress is not None:
            make_previews = None
            if step < self.total and step % preview_interval(self.total) == 0:
                make_previews = functools.partial(self._render_previews, tensors["latents"])
            self._on_progress(Progress(step, self.total, make_previews))
        if self._should_cancel is not None and self._should_cancel():
            pipe._interrupt = True  # diffusers skips the remaining steps
            self.cancelled_at = step
        return tensors

    def _render_previews(self, latents: torch.Tensor) -> list[Image.Image]:
        return self._previews(latents[self._firsts])


def load_engine(settings: Settings) -> DiffusersEngine:
    """Load the model named by the settings onto the chosen device, with the memory and speed options.

    Raises ``ModelLoadFailed`` with a one-line reason when the model cannot be loaded.
    """
    placement = loading.resolve_placement(settings.device, settings.dtype)
    pipe = loading.load_pipeline(settings, placement)
    compiled = loading.prepare_pipeline(pipe, settings, placement)
    decoder = loading.load_preview_decoder(settings, placement)
    engine = DiffusersEngine(
        pipe,
        model_name=loading.model_display_name(settings.model),
        previews=TinyDecoderPreview(decoder) if decoder is not None else None,
        tile_upscales=settings.vae_tiling,
    )
    log.info(
        "loaded %s on %s as %s",
        engine.model_name,
        placement.device,
        str(placement.dtype).removeprefix("torch."),
    )
    if compiled:
        sizes = sorted({1, settings.max_batch})
        log.info("compiling the UNet (warm-up generations at batch sizes %s)...", sizes)
        log.info("warm-up took %.1f s", engine.warm_up(batch_sizes=sizes))
    return engine


def _plan(requests: list[JobParams]) -> list[_Image]:
    """Flatten requests into images; draw missing seeds."""
    images = []
    for index, params in enumerate(requests):
        base = params.seed if params.seed is not None else random_seed()
        images.extend(
            _Image(index, params.prompt, params.negative_prompt, image_seed(base, i))
            for i in range(params.count)
        )
    return images


def _prepared_source(source: Image.Image | None, params: JobParams) -> Image.Image:
    """The source in RGB at the request's size (an upscale's is twice the source's)."""
    assert source is not None  # check_batch made sure
    source = source.convert("RGB")
    if source.size == params.size:
        return source
    return source.resize(params.size, Image.Resampling.LANCZOS)


def _is_out_of_memory(error: RuntimeError) -> bool:
    """CUDA raises ``OutOfMemoryError``; MPS raises a plain RuntimeError saying "out of memory"."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()
