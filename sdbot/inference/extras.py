"""What a batch brings to its model's pipeline call beyond size and schedule: its LoRAs, the embeddings, its
sampler and its prompts encoded as the family reads them; and what the PNGs say of them.

``ModelExtras`` belongs to one loaded model. ``prepare`` makes exactly the batch's LoRAs active (none: all
off), loads embeddings that appeared in the folder, checks each prompt against the model's window and
encodes the prompts: with compel for the CLIP families (weights, long prompts in chunks; ``conditioning``),
as plain text within the T5 window for SD 3.x and Flux (their markup removed, which the result tells the
member). The ``PreparedBatch`` then gives each pipeline call a new scheduler made from the model's own
config (the batch's sampler, or the model's), so no call's solver state or sampler reaches another, and
nothing is reloaded to change it.

Requests whose prompts encode to different lengths cannot share a call without padding one of them, which
would change its image; ``groups`` splits them into calls of one length each.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from diffusers import DiffusionPipeline, SchedulerMixin
from transformers import PreTrainedTokenizerBase

from sdbot.errors import InvalidRequest
from sdbot.inference.adapters import Embeddings, LoraAdapters
from sdbot.inference.addons import AddonLibrary, lora_hash
from sdbot.inference.conditioning import Conditioning, PromptEncoder
from sdbot.inference.families import FamilyProfile, TextEncoder
from sdbot.inference.pngmeta import LoraUse
from sdbot.inference.prompt_limits import PromptWindow
from sdbot.inference.prompt_syntax import has_weighting, plain_text
from sdbot.inference.samplers import Sampler, find_sampler, samplers_for
from sdbot.inference.scheduling import make_scheduler, scheduler_fields
from sdbot.params import JobParams

WEIGHTS_DROPPED = (
    "This model reads prompts without weights: `(word:1.2)`, `[word]` and `BREAK` were read as plain words."
)


class ImagePrompt(Protocol):
    """One image of a batch: its prompts, as the member wrote them, and its seed."""

    @property
    def prompt(self) -> str: ...

    @property
    def negative_prompt(self) -> str: ...

    @property
    def seed(self) -> int: ...


class ModelExtras:
    """LoRAs, embeddings, samplers and prompt encoding for the model whose text-to-image pipeline is ``pipe``
    (its image-to-image pipeline shares the modules). Not thread-safe: the engine serialises calls."""

    def __init__(
        self, pipe: DiffusionPipeline, profile: FamilyProfile, loras: AddonLibrary, embeddings: AddonLibrary
    ) -> None:
        self._profile = profile
        self._scheduler = pipe.scheduler  # the model's own: each call's scheduler is made from its config
        family = profile.family.value
        clip = profile.text_encoder is TextEncoder.CLIP
        self._loras = LoraAdapters(pipe, loras, family) if hasattr(pipe, "load_lora_weights") else None
        self._embeddings = Embeddings(pipe, embeddings, family) if clip else None
        self._encoder = PromptEncoder(pipe) if clip else None
        tokenizer = window_tokenizer(pipe) if profile.text_encoder is not TextEncoder.LLM else None
        self.tokenizer = None if tokenizer is None else tokenizer.backend_tokenizer.to_str()
        self.window = PromptWindow(profile, self.tokenizer)
        self.samplers = samplers_for(type(self._scheduler).__name__)
        self.own_sampler = scheduler_fields(self._scheduler, None)

    def prepare(self, params: JobParams, images: Sequence[ImagePrompt]) -> PreparedBatch:
        """Ready the model for a batch of ``params`` (its LoRAs and sampler) making ``images``. Raises
        ``InvalidRequest`` for a prompt past the window or a sampler or LoRAs the model cannot use,
        ``GenerationFailed`` for a LoRA that cannot be loaded."""
        for image in images:
            self.window.check("prompt", image.prompt)
            self.window.check("negative prompt", image.negative_prompt)
        sampler = None
        if params.sampler is not None:
            sampler = find_sampler(params.sampler, scheduler=type(self._scheduler).__name__)
            if sampler is None:
                raise InvalidRequest(f"{self._profile.label} models cannot use the sampler {params.sampler}")
        if params.loras and self._loras is None:
            raise InvalidRequest(f"{self._profile.label} models take no LoRAs")
        started = time.perf_counter()
        loras = () if self._loras is None else self._loras.apply(params.loras)
        lora_seconds = time.perf_counter() - started
        if self._embeddings is not None:
            self._embeddings.refresh()
        encoded = None
        if self._encoder is not None:
            # after the LoRAs: one on the text encoder changes the embeddings
            encoded = self._encoder.encode([text for i in images for text in (i.prompt, i.negative_prompt)])
        notes: tuple[str, ...] = ()
        if self._encoder is None and any(has_weighting(f"{i.prompt} {i.negative_prompt}") for i in images):
            notes = (WEIGHTS_DROPPED,)
        return PreparedBatch(
            scheduler=self._scheduler,
            sampler=sampler,
            sampler_fields=self.own_sampler if sampler is None else (sampler.label, sampler.schedule_type),
            loras=loras,
            lora_seconds=lora_seconds,
            encoder=self._encoder,
            encoded=encoded,
            negative_prompt=self._profile.negative_prompt,
            embeddings=self._embeddings,
            notes=notes,
        )

    def describe(self, params: JobParams) -> PreparedBatch:
        """What the PNGs of ``params``' images say of its sampler and LoRAs, for images the model did not
        make with them (a super-resolution upscale of one of its images): nothing is applied."""
        sampler = None
        if params.sampler is not None:
            sampler = find_sampler(params.sampler, scheduler=type(self._scheduler).__name__)
        loras = []
        for name, weight in params.loras:
            addon = None if self._loras is None else self._loras.library.find(name)
            loras.append(LoraUse(name, weight, "" if addon is None else lora_hash(addon.path)))
        return PreparedBatch(
            scheduler=self._scheduler,
            sampler=sampler,
            sampler_fields=self.own_sampler if sampler is None else (sampler.label, sampler.schedule_type),
            loras=tuple(loras),
            lora_seconds=0.0,
            encoder=None,
            encoded=None,
            negative_prompt=self._profile.negative_prompt,
            embeddings=None,
            notes=(),
        )


@dataclass(frozen=True)
class PreparedBatch:
    """A batch's sampler, LoRAs (as the PNGs name them: with ``sampler_fields``, the PNG's ``Sampler`` and
    ``Schedule type``) and encoded prompts, ready for its pipeline calls; ``notes``: what the result
    message should tell the member."""

    scheduler: SchedulerMixin  # the model's own, which each call's is made from
    sampler: Sampler | None
    sampler_fields: tuple[str, str]
    loras: tuple[LoraUse, ...]
    lora_seconds: float  # making them active
    encoder: PromptEncoder | None
    encoded: dict[str, Conditioning] | None
    negative_prompt: bool  # whether the family takes one
    embeddings: Embeddings | None
    notes: tuple[str, ...]

    def groups(self, requests: Sequence[Sequence[ImagePrompt]]) -> list[list[int]]:
        """The requests (indices) that can share a pipeline call: those whose prompts encode to one length."""
        if self.encoded is None:
            return [list(range(len(requests)))]
        by_length: dict[int, list[int]] = {}
        for index, images in enumerate(requests):
            texts = [text for image in images for text in (image.prompt, image.negative_prompt)]
            length = max(self.encoded[text].tokens for text in texts)
            by_length.setdefault(length, []).append(index)
        return list(by_length.values())

    def call_options(self, pipe: DiffusionPipeline, images: Sequence[ImagePrompt]) -> dict[str, object]:
        """The prompt arguments of one pipeline call over ``images``; gives ``pipe`` a new scheduler."""
        pipe.scheduler = make_scheduler(self.scheduler, self.sampler, [image.seed for image in images])
        if self.encoder is None or self.encoded is None:
            options: dict[str, object] = {"prompt": [plain_text(image.prompt) for image in images]}
            if self.negative_prompt:
                options["negative_prompt"] = [plain_text(image.negative_prompt) for image in images]
            return options
        return self.encoder.arguments(
            self.encoded, [image.prompt for image in images], [image.negative_prompt for image in images]
        )

    def embedding_hashes(self, image: ImagePrompt) -> dict[str, str]:
        """The embeddings ``image``'s prompts used, with their hashes (the PNG's ``TI hashes``)."""
        if self.embeddings is None:
            return {}
        return self.embeddings.hashes(f"{image.prompt} {image.negative_prompt}")


def window_tokenizer(pipe: DiffusionPipeline) -> PreTrainedTokenizerBase | None:
    """The tokenizer whose window bounds a prompt: the T5's (SD3's third, Flux's second) where the pipeline
    has one, else its CLIP tokenizer."""
    tokenizers = [getattr(pipe, name, None) for name in ("tokenizer_3", "tokenizer_2", "tokenizer")]
    present = [tokenizer for tokenizer in tokenizers if tokenizer is not None]
    long = [tokenizer for tokenizer in present if not type(tokenizer).__name__.startswith("CLIP")]
    chosen = (long or present or [None])[0]
    return chosen if hasattr(chosen, "backend_tokenizer") else None
