"""A tiny pipeline of a family sdbot has no table entry for: Z-Image (a single-stream diffusion transformer
conditioned on a Qwen3 language model, over the Flux VAE's 16-channel latents).

It stands for the families sdbot runs through their own pipeline's defaults (``Family.OTHER``). Its tokenizer
is a byte-level BPE over the 256 byte symbols with Qwen's chat markers and a minimal chat template, which is
all the pipeline asks of it (it wraps each prompt in a chat turn).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tests.tiny_models import parts

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_zimage(folder: Path) -> Path:
    """Save a tiny Z-Image pipeline into ``folder`` (no safety checker, as Z-Image ships none)."""
    tokenizer = _qwen_tokenizer()
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # made with torch.empty: fixed, so that no NaN slips in
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    torch.manual_seed(0)
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
        )
    )
    pipe = ZImagePipeline(
        transformer=transformer,
        vae=parts.vae(16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def _qwen_tokenizer() -> Qwen2Tokenizer:
    alphabet = list(bytes_to_unicode().values())
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps({char: i for i, char in enumerate(alphabet)}), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = Qwen2Tokenizer(
            str(vocab_file),
            str(merges_file),
            unk_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            eos_token="<|im_end|>",
        )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
