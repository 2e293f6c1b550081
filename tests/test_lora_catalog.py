"""Which LoRAs a request gets: tags in the prompt and the options, checked against the folder, the model's
family and the server's rules; autocomplete answers from the same rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdbot.errors import InvalidRequest, NotAllowedHere, PromptRejected
from sdbot.inference.addon_families import SD1, SDXL
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.services.loras import LoraCatalog
from sdbot.services.settings import GuildSettings

SD1_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
SDXL_KEY = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"


@pytest.fixture
def catalog(tmp_path: Path) -> LoraCatalog:
    def lora(name: str, key: str, width: int, tags: dict[str, int] | None = None) -> None:
        path = tmp_path / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"ss_tag_frequency": json.dumps({"1_x": tags})} if tags else None
        save_file({key: np.ones((1, width), np.float16)}, str(path), metadata)

    lora("styles/ink", SD1_KEY, 768, {"inkstyle": 9, "sketch": 3})
    lora("detail", SD1_KEY, 768)
    lora("xl/film", SDXL_KEY, 1280, {"filmgrain": 5})
    for number in range(30):
        lora(f"many/style{number:02}", SD1_KEY, 768)
    return LoraCatalog(AddonLibrary(tmp_path, AddonKind.LORA), AddonLibrary(None, AddonKind.EMBEDDING), 3)


def test_tags_and_the_option_are_taken_with_their_folder_names(catalog: LoraCatalog) -> None:
    text, loras = catalog.from_request("a cat <lora:ink:0.7>, on a mat", "DETAIL", -0.5, SD1, GuildSettings())
    assert text == "a cat, on a mat"
    assert loras == (("styles/ink", 0.7), ("detail", -0.5))
    assert catalog.from_request("a cat", None, None, SD1, GuildSettings()) == ("a cat", ())


@pytest.mark.parametrize(
    ("prompt", "option", "weight", "settings", "error", "says"),
    [
        ("<lora:nope>", None, None, GuildSettings(), InvalidRequest, "no LoRA 'nope' here"),
        (
            "a cat",
            "xl/film",
            None,
            GuildSettings(),
            InvalidRequest,
            "for SDXL models, and this model is SD 1.x",
        ),
        ("a cat", None, 0.5, GuildSettings(), InvalidRequest, "needs a `lora`"),
        ("<lora:ink:x>", None, None, GuildSettings(), PromptRejected, "not a number"),
        ("<lora:ink>", None, None, GuildSettings(loras_enabled=False), NotAllowedHere, "switched off"),
        ("a cat", "ink", None, GuildSettings(loras=frozenset({"detail"})), NotAllowedHere, "not allowed"),
    ],
)
def test_a_lora_that_cannot_be_used_is_refused_saying_why(
    catalog: LoraCatalog, prompt: str, option: str | None, weight: float | None, settings, error, says: str
) -> None:
    with pytest.raises(error, match=says):
        catalog.from_request(prompt, option, weight, SD1, settings)


def test_autocomplete_offers_the_familys_allowed_loras_by_name_or_trigger_word(catalog: LoraCatalog) -> None:
    everything = GuildSettings()
    assert [c.label for c in catalog.choices("ink", SD1, everything)] == [
        "styles/ink (triggers: inkstyle, sketch)"
    ]
    assert [c.name for c in catalog.choices("sketch", SD1, everything)] == ["styles/ink"]
    assert [c.name for c in catalog.choices("", SDXL, everything)] == ["xl/film"]
    assert len(catalog.choices("", SD1, everything)) == 25  # Discord's most; typing narrows them down
    assert [c.name for c in catalog.choices("style29", SD1, everything)] == ["many/style29"]
    assert catalog.choices("", SD1, GuildSettings(loras_enabled=False)) == []
    limited = GuildSettings(loras=frozenset({"detail"}))
    assert [c.name for c in catalog.choices("", SD1, limited)] == ["detail"]
