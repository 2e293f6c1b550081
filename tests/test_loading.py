"""What the model loader decides before a model runs: each model's precision, and which preview decoder
serves which family."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sdbot.config import Settings
from sdbot.errors import ModelLoadFailed
from sdbot.inference.families import Family
from sdbot.inference.loading import ModelLoader, Placement, preview_decoder_sources
from sdbot.inference.previews import TINY_DECODERS
from sdbot.library import ModelEntry

GPU = Placement(torch.device("cuda"), torch.float16)  # what SDBOT_DTYPE=auto resolves to on a CUDA GPU


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("sd1", torch.float16),
        ("sdxl", torch.float16),
        ("sd3", torch.bfloat16),
        ("flux-schnell", torch.bfloat16),
    ],
)
def test_auto_precision_on_a_gpu_is_bfloat16_for_the_families_trained_in_it(
    tiny_family: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype
) -> None:
    """A T5 in float16 overflows: SD3 and Flux get bfloat16 where the GPU has it; the UNets float16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    folder = tiny_family(name)
    loader = ModelLoader(Settings(model=str(folder)), GPU)
    assert loader.dtype_for(ModelEntry(name, str(folder))) == dtype
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert loader.dtype_for(ModelEntry(name, str(folder))) == torch.float16


def test_a_chosen_precision_is_kept_for_every_family(tiny_family: Callable[[str], Path]) -> None:
    folder = tiny_family("flux-schnell")
    loader = ModelLoader(Settings(model=str(folder), dtype="float16"), GPU)
    assert loader.dtype_for(ModelEntry("flux", str(folder))) == torch.float16


def test_preview_decoders_are_named_per_family_or_all_at_once() -> None:
    assert preview_decoder_sources(None) == {}
    assert preview_decoder_sources("madebyollin/taesd") == {None: "madebyollin/taesd"}
    assert preview_decoder_sources("sdxl=/models/taesdxl, flux = madebyollin/taef1") == {
        Family.SDXL: "/models/taesdxl",
        Family.FLUX: "madebyollin/taef1",
    }
    assert preview_decoder_sources("tiny") == TINY_DECODERS
    with pytest.raises(ModelLoadFailed, match="'sd5' is no model family"):
        preview_decoder_sources("sd5=/models/taesd5")
