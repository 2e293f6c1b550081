"""Prompt embeddings for the CLIP families (SD 1.x, SD 2.x, SDXL) through compel.

The pipelines' own ``encode_prompt`` cuts a prompt at CLIP's 77 tokens and knows no weights. ``PromptEncoder``
hands compel each prompt as the weighted fragments of ``prompt_syntax.parse_weighted``: compel scales the
embeddings of weighted words (and, below 1, blends towards the prompt without them), encodes prompts
longer than the window as several 77-token chunks side by side, and expands multi-vector embeddings.
Each ``BREAK`` section starts a chunk of its own. A prompt without markup that fits the window encodes as
the pipeline would encode it.

SDXL has two text encoders: each encodes the prompt (their penultimate layers, side by side), and the
second's pooled output of the plain text conditions the UNet as well; an empty negative prompt is all
zeros where the model asks for that (``force_zeros_for_empty_prompt``), as in diffusers' pipeline.

Classifier-free guidance needs a prompt and its negative prompt of one length, so the shorter is padded
with empty-prompt chunks. One pipeline call needs one length for all its images too, and padding a prompt
further would change its image: ``Conditioning.chunks`` lets the engine run requests of different lengths
in separate calls, so that no image depends on another request's prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from compel import Compel, DiffusersTextualInversionManager, ReturnedEmbeddingsType
from diffusers import DiffusionPipeline

from sdbot.inference.prompt_syntax import parse_weighted, plain_text


@dataclass(frozen=True)
class Conditioning:
    """One text's embeddings, ``[1, tokens, width]`` (SDXL: both encoders' side by side), and SDXL's
    pooled embedding."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None

    @property
    def tokens(self) -> int:
        return self.embeds.shape[1]


class PromptEncoder:
    """Embeddings of prompts for ``pipe``, a Stable Diffusion (1.x, 2.x) or SDXL pipeline."""

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self._pipe = pipe
        self._xl = getattr(pipe, "text_encoder_2", None) is not None

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> dict[str, Conditioning]:
        """Each distinct text's embeddings (and the empty text's, which pads), with the text encoders as they
        are now: with the LoRAs of the batch."""
        # New each call: compel caches the empty prompt's embeddings, which a text encoder LoRA changes.
        compels = self._compels()
        return {text: self._encode(compels, text) for text in dict.fromkeys(["", *texts])}

    def arguments(
        self, encoded: dict[str, Conditioning], prompts: Sequence[str], negative_prompts: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """The pipeline's embedding arguments for one image per prompt (``prompt_embeds``,
        ``negative_prompt_embeds`` and, for SDXL, the pooled ones), each padded to the longest text with
        empty-prompt chunks, as compel pads."""
        length = max(encoded[text].tokens for text in [*prompts, *negative_prompts])
        empty = encoded[""].embeds

        def padded(text: str) -> torch.Tensor:
            embeds = encoded[text].embeds
            return torch.cat([embeds, *[empty] * ((length - embeds.shape[1]) // empty.shape[1])], dim=1)

        arguments = {
            "prompt_embeds": torch.cat([padded(text) for text in prompts]),
            "negative_prompt_embeds": torch.cat([padded(text) for text in negative_prompts]),
        }
        if self._xl:
            arguments["pooled_prompt_embeds"] = torch.cat([encoded[text].pooled for text in prompts])
            negative_pooled = torch.cat([encoded[text].pooled for text in negative_prompts])
            arguments["negative_pooled_prompt_embeds"] = negative_pooled
            if self._pipe.config.get("force_zeros_for_empty_prompt", False):
                for index, text in enumerate(negative_prompts):
                    if not text:
                        arguments["negative_prompt_embeds"][index].zero_()
                        negative_pooled[index].zero_()
        return arguments

    def _compels(self) -> list[Compel]:
        pipe = self._pipe
        common = {
            "textual_inversion_manager": DiffusersTextualInversionManager(pipe),
            "truncate_long_prompts": False,
        }
        if not self._xl:
            return [Compel(pipe.tokenizer, pipe.text_encoder, **common)]
        hidden = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        return [
            Compel(pipe.tokenizer, pipe.text_encoder, returned_embeddings_type=hidden, **common),
            Compel(pipe.tokenizer_2, pipe.text_encoder_2, returned_embeddings_type=hidden, **common),
        ]

    def _encode(self, compels: list[Compel], text: str) -> Conditioning:
        sections = parse_weighted(text)
        per_encoder = []
        for compel in compels:
            provider = compel.conditioning_provider
            chunks = [
                provider.get_embeddings_for_weighted_prompt_fragments(
                    text_batch=[[fragment.text for fragment in section] or [""]],
                    fragment_weights_batch=[[fragment.weight for fragment in section] or [1.0]],
                    device=compel.device,
                )
                for section in sections
            ]
            per_encoder.append(torch.cat(chunks, dim=1))
        if len(per_encoder) == 2 and per_encoder[0].shape[1] != per_encoder[1].shape[1]:
            raise ValueError("SDXL's two tokenizers split the prompt into different chunks")
        pooled = None
        if self._xl:
            second = compels[1]
            pooled = second.conditioning_provider.get_pooled_embeddings(
                [plain_text(text)], device=second.device
            )
        return Conditioning(torch.cat(per_encoder, dim=-1), pooled)
