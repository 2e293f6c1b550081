"""A tiny random-weight Stable Diffusion pipeline, built offline for tests and benchmarks.

It has SD's shape where behaviour depends on it (an 8x-downsampling VAE with four blocks and four latent
channels, a CLIP text encoder and byte-level BPE tokenizer, a StableDiffusionSafetyChecker) and is small
everywhere else, so it saves to a few MB and runs a step in milliseconds on a CPU. The safety checker's
verdict is forced through its concept weights: the score is cosine similarity minus the weight, so -10
flags every image and +10 none.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

TEXT_DIM = 32
SAFETY_IMAGE_SIZE = 32
# A few whole words so common test prompts tokenize to more than single bytes.
_MERGED_WORDS = ("a", "cat", "dog", "red", "blue", "photo", "of", "the")


def build_tiny_model(folder: Path, *, nsfw: bool | None = False) -> Path:
    """Save a tiny SD pipeline into ``folder`` and return it.

    ``nsfw=True``: the safety checker flags every image; ``False``: none; ``None``: no checker at all.
    """
    folder = Path(folder)
    pipe = build_tiny_pipeline(nsfw=nsfw)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_pipeline(*, nsfw: bool | None = False) -> StableDiffusionPipeline:
    """The tiny pipeline in memory (deterministic weights: every call builds the same model)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    safety_checker, feature_extractor = (None, None) if nsfw is None else _tiny_safety_checker(flag_all=nsfw)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=safety_checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=nsfw is not None,
    )


def save_single_file(folder: Path, target: Path) -> Path:
    """Write the pipeline saved in ``folder`` as one SD-style checkpoint (original key names) at ``target``.

    This is the layout of a community ``.safetensors`` file, converted with diffusers' own key mapping
    (the reverse of what ``from_single_file`` applies).
    """
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    unet_layers = pipe.unet.config.layers_per_block
    upsampler_slot = {
        i: 2 if getattr(block, "attentions", None) else 1 for i, block in enumerate(pipe.unet.up_blocks)
    }
    vae_blocks = len(pipe.vae.config.up_block_types)
    state: dict[str, torch.Tensor] = {}
    for key, value in pipe.unet.state_dict().items():
        state["model.diffusion_model." + _unet_key(key, unet_layers, upsampler_slot)] = value
    for key, value in pipe.vae.state_dict().items():
        ldm_key = _vae_key(key, vae_blocks)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the LDM VAE's attention projections are 1x1 convolutions
        state["first_stage_model." + ldm_key] = value
    for key, value in pipe.text_encoder.state_dict().items():
        # transformers 5 drops the ``text_model.`` level that SD checkpoints (and transformers 4) have
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return target


_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _unet_key(key: str, layers: int, upsampler_slot: dict[int, int]) -> str:
    """Diffusers UNet key -> LDM key (``layers`` resnets per down block, ``layers + 1`` per up block)."""
    per = layers + 1
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        side, block, kind, index, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        slot = 0 if kind == "resnets" else 1
        if kind == "resnets":
            rest = _rename_resnet(rest)
        if side == "down":
            return f"input_blocks.{per * block + index + 1}.{slot}.{rest}"
        return f"output_blocks.{per * block + index}.{slot}.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{per * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        return f"output_blocks.{per * block + layers}.{upsampler_slot[block]}.conv.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    module, _, param = key.rpartition(".")
    return f"{_UNET_TOP_LEVEL[module]}.{param}"


def _rename_resnet(rest: str) -> str:
    module, _, param = rest.rpartition(".")
    return f"{_UNET_RESNET_PARTS[module]}.{param}"


_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_key(key: str, blocks: int) -> str:
    """Diffusers VAE key -> LDM key (the decoder's up blocks are numbered in reverse in LDM)."""
    key = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION_PARTS[m[2]]}.{m[3]}"
    return key


def _tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer over all 256 bytes plus a few merged words, padded to 1000 ids."""
    alphabet = list(bytes_to_unicode().values())
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens = ["<|startoftext|>", "!pad", "<|endoftext|>"]
    tokens += [b for b in alphabet if b not in tokens] + [b + "</w>" for b in alphabet]
    merges: list[str] = []
    for word in _MERGED_WORDS:
        current = word[0]
        for i, char in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            piece = char + ("</w>" if last else "")
            merges.append(f"{current} {piece}")
            current = current + piece
            if current not in tokens:
                tokens.append(current)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    assert len(vocab) <= 1000, "tiny vocabulary must fit the text encoder's embedding table"
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            bos_token=specials[0],
            eos_token=specials[1],
            pad_token="!pad",
            unk_token=specials[1],
            model_max_length=77,
        )


def _tiny_safety_checker(*, flag_all: bool) -> tuple[StableDiffusionSafetyChecker, CLIPImageProcessor]:
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": SAFETY_IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    weight = -10.0 if flag_all else 10.0
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(weight)
        checker.special_care_embeds_weights.fill_(weight)
    processor = CLIPImageProcessor(
        size={"shortest_edge": SAFETY_IMAGE_SIZE},
        crop_size={"height": SAFETY_IMAGE_SIZE, "width": SAFETY_IMAGE_SIZE},
    )
    return checker, processor
