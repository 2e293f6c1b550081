"""A model's finished pictures as results: each one's NSFW flag, and its PNG with the parameters that made it.

Both ways a model makes pictures end here: a pipeline call (``ModelRunner.run``) and super-resolution
(``ModelRunner.super_resolve``). The safety checker runs on the finished pixels (``sdbot.inference.safety``),
so a flagged image keeps them; the PNG's parameters are those AUTOMATIC1111 writes
(``sdbot.inference.pngmeta``).
"""

from __future__ import annotations

from PIL import Image

from sdbot.inference.batch import Batch
from sdbot.inference.extras import PreparedBatch
from sdbot.inference.pipelines import SafetyModel
from sdbot.inference.pngmeta import ImageParameters, encode_png
from sdbot.inference.safety import SafetyCheck
from sdbot.inference.types import GeneratedImage, GenerationResult, Timings


class ResultWriter:
    """Makes one model's results: its pictures checked by ``safety`` (None: the model has none) and written
    as PNGs that name the model ``name`` (with ``model_hash`` when it is a checkpoint file)."""

    def __init__(self, name: str, safety: SafetyModel | None, model_hash: str | None) -> None:
        self._name = name
        # what the PNGs say besides the model's name: A1111's hash of a checkpoint file
        self._png_extra = {} if model_hash is None else {"Model hash": model_hash}
        self._safety = None if safety is None else SafetyCheck(safety.checker, safety.feature_extractor)

    @property
    def checks_safety(self) -> bool:
        return self._safety is not None

    def flags(self, pictures: list[Image.Image]) -> list[bool | None]:
        """Each picture's NSFW flag (None: unknown, the model has no checker)."""
        return list(self._safety(pictures)) if self._safety else [None] * len(pictures)

    def results(
        self,
        batch: Batch,
        prepared: PreparedBatch,
        pictures: list[Image.Image],
        flags: list[bool | None],
        timings: Timings,
        extra: dict[str, str] | None = None,
    ) -> list[GenerationResult]:
        """The PNGs, each with its parameters: the batch's (with its sampler, LoRAs and embeddings), the
        model's hash, what an outpainting did (``Outpaint: pan left``) and ``extra``."""
        results: list[list[GeneratedImage]] = [[] for _ in range(batch.request_count)]
        sampler, schedule_type = prepared.sampler_fields
        params = batch.params
        outpaint = {} if params.outpaint is None else {"Outpaint": params.outpaint}
        written_extra = self._png_extra | outpaint | (extra or {})
        for image, picture, flag in zip(batch.images, pictures, flags, strict=True):
            written = ImageParameters(
                prompt=image.prompt,
                negative_prompt=image.negative_prompt,
                steps=params.steps,
                sampler=sampler,
                schedule_type=schedule_type,
                guidance=params.guidance,
                seed=image.seed,
                width=params.width,
                height=params.height,
                model=self._name,
                strength=params.strength,
                loras=prepared.loras,
                embeddings=prepared.embedding_hashes(image),
                extra=written_extra,
            )
            results[image.request].append(
                GeneratedImage(picture, image.seed, flag, encode_png(picture, written))
            )
        return [GenerationResult(request_images, timings, prepared.notes) for request_images in results]
