"""Which model family a LoRA or a textual-inversion embedding is for, from its safetensors header alone.

The header lists every tensor's name and shape, so the family follows without loading a weight:

- LoRAs: Flux's block names (``double_blocks``/``single_blocks``, diffusers' ``single_transformer_blocks``),
  SD3's (``joint_blocks``, or a diffusers transformer whose attention is narrower than Flux's 3,072), SDXL's
  second text encoder (``lora_te2_``, ``text_encoder_2.``) or its UNet's transformer blocks two and more
  deep, then the width of the cross-attention context (768 SD 1.x, 1,024 SD 2.x, 2,048 SDXL) or of the
  text encoder (768, 1,024, 1,280); where the tensors say nothing more, the trainer's metadata
  (``ss_base_model_version``, ``modelspec.architecture``) decides, else SD 1.x.
- Embeddings: SDXL's come as a ``clip_l``/``clip_g`` pair; a single vector set 1,024 wide is SD 2.x's
  (OpenCLIP), any other SD 1.x's.

Formats that diffusers' ``load_lora_weights`` cannot read (LyCORIS LoHa and LoKr, full-weight diffs) raise
``UnsupportedAddon`` with the reason, as does a file whose tensors are not a LoRA or an embedding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sdbot.errors import SdbotError

SD1, SD2, SDXL, SD3, FLUX = "sd1", "sd2", "sdxl", "sd3", "flux"
FAMILY_LABELS = {SD1: "SD 1.x", SD2: "SD 2.x", SDXL: "SDXL", SD3: "SD 3.x", FLUX: "Flux"}

Shapes = Mapping[str, Sequence[int]]

FLUX_WIDTH = 3072  # Flux.1's attention width; SD 3.x's is 1,536 (medium) or 2,432 (large)
_CONTEXT_WIDTHS = {768: SD1, 1024: SD2, 2048: SDXL}  # the UNet's cross-attention context
_TEXT_WIDTHS = {768: SD1, 1024: SD2, 1280: SDXL}  # a text encoder's hidden size
OPEN_CLIP_WIDTH = 1024

_FLUX_BLOCKS = re.compile(r"(^|[._])(double_blocks|single_blocks|single_transformer_blocks)[._]\d")
_SD3_BLOCKS = re.compile(r"(^|[._])joint_blocks[._]\d")
_DIT_BLOCKS = re.compile(r"(^|[._])transformer[._]transformer_blocks[._]\d")
_SECOND_TEXT_ENCODER = re.compile(r"^(lora_te2_|text_encoder_2\.|te2\.)")
_TEXT_ENCODER = re.compile(r"^(lora_te1?_|text_encoder\.|te\.)")
_DEEP_TRANSFORMER = re.compile(r"transformer_blocks[._][1-9]")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k[._]")
_TEXT_QUERY = re.compile(r"q_proj[._]")
_LORA_DOWN = re.compile(r"[._](lora_down|lora_A|lora[._]down)[._]weight$")
_LYCORIS = {"hada_w1_a": "LyCORIS LoHa", "lokr_w1": "LyCORIS LoKr", "diff": "full-weight difference"}


class UnsupportedAddon(SdbotError):
    """A LoRA or embedding file that sdbot cannot use; the message says why."""


def lora_family(shapes: Shapes, metadata: Mapping[str, str]) -> str:
    """The family a LoRA file is for (see the module's docstring for the rules)."""
    keys = list(shapes)
    for marker, kind in _LYCORIS.items():
        if any(key.endswith(f".{marker}") or key.endswith(f".{marker}.weight") for key in keys):
            raise UnsupportedAddon(f"a {kind}, which diffusers does not load; LoRA and LoCon files work")
    down = {key: shape for key, shape in shapes.items() if _LORA_DOWN.search(key)}
    if not down:
        raise UnsupportedAddon("no LoRA weights in it (lora_down / lora_A tensors)")
    if any(_FLUX_BLOCKS.search(key) for key in down):
        return FLUX
    if any(_SD3_BLOCKS.search(key) for key in down):
        return SD3
    dit = {key: shape for key, shape in down.items() if _DIT_BLOCKS.search(key)}
    if dit:
        return FLUX if max(shape[-1] for shape in dit.values()) == FLUX_WIDTH else SD3
    if any(_SECOND_TEXT_ENCODER.search(key) for key in down):
        return SDXL
    if any(_DEEP_TRANSFORMER.search(key) for key in down):
        return SDXL
    for key, shape in down.items():
        if _CROSS_ATTENTION_KEY.search(key) and shape[-1] in _CONTEXT_WIDTHS:
            return _CONTEXT_WIDTHS[shape[-1]]
    for key, shape in down.items():
        if _TEXT_ENCODER.search(key) and _TEXT_QUERY.search(key) and shape[-1] in _TEXT_WIDTHS:
            return _TEXT_WIDTHS[shape[-1]]
    return _family_from_metadata(metadata) or SD1


def embedding_family(shapes: Shapes) -> tuple[str, int]:
    """The family a textual-inversion file is for, and how many vectors (prompt tokens) it stands for."""
    if {"clip_l", "clip_g"} <= set(shapes):
        return SDXL, _vectors(shapes["clip_l"])
    if len(shapes) != 1:
        raise UnsupportedAddon(
            f"not a textual-inversion embedding: {len(shapes)} tensors where one (or clip_l and clip_g) "
            "were expected"
        )
    [shape] = shapes.values()
    if len(shape) not in (1, 2):
        raise UnsupportedAddon(f"not a textual-inversion embedding: a tensor of shape {list(shape)}")
    return SD2 if shape[-1] == OPEN_CLIP_WIDTH else SD1, _vectors(shape)


def _vectors(shape: Sequence[int]) -> int:
    return shape[0] if len(shape) == 2 else 1


def _family_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The family the trainer wrote down (kohya's ``ss_*`` keys, or the ``modelspec`` standard)."""
    base = metadata.get("ss_base_model_version", "")
    architecture = metadata.get("modelspec.architecture", "")
    if base.startswith("sdxl") or architecture.startswith("stable-diffusion-xl"):
        return SDXL
    if (
        base.startswith("sd_v2")
        or metadata.get("ss_v2") == "True"
        or architecture.startswith("stable-diffusion-v2")
    ):
        return SD2
    if base.startswith("flux") or architecture.startswith("flux"):
        return FLUX
    if base.startswith("sd3") or architecture.startswith("stable-diffusion-3"):
        return SD3
    if base.startswith("sd_v1") or architecture.startswith("stable-diffusion-v1"):
        return SD1
    return None
