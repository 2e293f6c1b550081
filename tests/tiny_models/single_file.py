"""Write a saved SD 1.x or SDXL pipeline as one original-layout ``.safetensors`` checkpoint.

This is the layout of the community checkpoints users download (LDM key names: ``model.diffusion_model.``,
``first_stage_model.``, ``cond_stage_model.`` or SDXL's ``conditioner.embedders.``), made with the reverse of
the key mapping diffusers' ``from_single_file`` applies, so that loading the file gives back the same model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionXLPipeline
from safetensors.torch import save_file


def save_single_file(folder: Path, target: Path) -> Path:
    """Write the SD 1.x or SDXL pipeline saved in ``folder`` as one checkpoint at ``target``."""
    pipe = AutoPipelineForText2Image.from_pretrained(folder)
    state = _prefixed("model.diffusion_model.", _unet_state(pipe.unet))
    state |= _prefixed("first_stage_model.", _vae_state(pipe.vae))
    if isinstance(pipe, StableDiffusionXLPipeline):
        state |= _prefixed("conditioner.embedders.0.transformer.", _clip_state(pipe.text_encoder))
        state |= _prefixed("conditioner.embedders.1.model.", _open_clip_state(pipe.text_encoder_2))
    else:
        state |= _prefixed("cond_stage_model.transformer.", _clip_state(pipe.text_encoder))
    save_file({key: value.contiguous() for key, value in state.items()}, str(target))
    return target


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


# --- UNet --------------------------------------------------------------------------------------------------

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
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size and pooled-text embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _unet_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    layers = unet.config.layers_per_block
    upsampler_slot = {
        i: 2 if getattr(block, "attentions", None) else 1 for i, block in enumerate(unet.up_blocks)
    }
    return {_unet_key(key, layers, upsampler_slot): value for key, value in unet.state_dict().items()}


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


# --- VAE ---------------------------------------------------------------------------------------------------

_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_state(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    blocks = len(vae.config.up_block_types)
    state = {}
    for key, value in vae.state_dict().items():
        ldm_key = _vae_key(key, blocks)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the LDM VAE's attention projections are 1x1 convolutions
        state[ldm_key] = value
    return state


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


# --- text encoders -----------------------------------------------------------------------------------------


def _clip_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """OpenAI CLIP (SD 1.x, SDXL's first encoder) keeps transformers' names under ``text_model.``, a level
    transformers 5 drops from ``CLIPTextModel``'s own keys."""
    return {
        (key if key.startswith("text_model.") else "text_model." + key): value
        for key, value in encoder.state_dict().items()
    }


_OPEN_CLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OPEN_CLIP_TOP_LEVEL = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def _open_clip_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """OpenCLIP (SDXL's second encoder): ``transformer.resblocks.N`` with fused q/k/v projections and a
    transposed text projection."""
    source = encoder.state_dict()
    state = {_OPEN_CLIP_TOP_LEVEL[key]: source[key] for key in _OPEN_CLIP_TOP_LEVEL}
    state["text_projection"] = source["text_projection.weight"].T
    for index in range(encoder.config.num_hidden_layers):
        layer, block = f"text_model.encoder.layers.{index}.", f"transformer.resblocks.{index}."
        for param in ("weight", "bias"):
            state[f"{block}attn.in_proj_{param}"] = torch.cat(
                [source[f"{layer}self_attn.{part}_proj.{param}"] for part in "qkv"]
            )
            for name, ldm_name in _OPEN_CLIP_LAYER_PARTS.items():
                state[f"{block}{ldm_name}.{param}"] = source[f"{layer}{name}.{param}"]
    return state
