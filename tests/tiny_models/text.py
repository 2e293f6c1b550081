"""Tiny text encoders and their tokenizers, written offline (the hub's tokenizer files are unreachable).

CLIP: a byte-level BPE vocabulary over all 256 bytes plus a few merged words, so test prompts tokenize to
words as well as bytes. T5: a Unigram model built with the ``tokenizers`` library over the same words and
single characters, saved as ``tokenizer.json`` (it loads back as transformers' T5 tokenizer). The encoders
are random and small: widths of 16-48, one to ten layers.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

CLIP_VOCAB_SIZE = 1000
# A few whole words so common test prompts tokenize to more than single bytes or characters.
WORDS = ("a", "cat", "dog", "red", "blue", "photo", "of", "the")
T5_SPECIALS = ("<pad>", "</s>", "<unk>")


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer over all 256 bytes plus ``WORDS``, within ``CLIP_VOCAB_SIZE`` ids."""
    alphabet = list(bytes_to_unicode().values())
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens = ["<|startoftext|>", "!pad", "<|endoftext|>"]
    tokens += [b for b in alphabet if b not in tokens] + [b + "</w>" for b in alphabet]
    merges: list[str] = []
    for word in WORDS:
        current = word[0]
        for i, char in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            piece = char + ("</w>" if last else "")
            merges.append(f"{current} {piece}")
            current = current + piece
            if current not in tokens:
                tokens.append(current)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    assert len(vocab) <= CLIP_VOCAB_SIZE, "tiny vocabulary must fit the text encoder's embedding table"
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


def clip_text_encoder(
    width: int, layers: int, *, projection: bool = False, hidden_act: str = "quick_gelu"
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A random CLIP text encoder ``width`` wide; ``projection``: with the pooled projection SDXL's second
    encoder and SD3's two CLIP encoders have (projection dimension = width)."""
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=width,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=layers,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        projection_dim=width,
    )
    torch.manual_seed(0)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5_tokenizer() -> T5TokenizerFast:
    """A T5-style Unigram tokenizer (``▁`` word starts, ``</s>`` appended) over ``WORDS`` and characters."""
    pieces = [(token, 0.0) for token in T5_SPECIALS]
    pieces += [("▁" + word, -2.0) for word in WORDS] + [("▁", -3.0)]
    pieces += [(char, -5.0) for char in string.ascii_letters + string.digits + string.punctuation]
    backend = Tokenizer(models.Unigram(pieces, unk_id=T5_SPECIALS.index("<unk>")))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", T5_SPECIALS.index("</s>"))]
    )
    return T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def t5_encoder(width: int, vocab_size: int) -> T5EncoderModel:
    """A random two-layer T5 encoder ``width`` wide over ``vocab_size`` ids."""
    config = T5Config(
        vocab_size=vocab_size,
        d_model=width,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return T5EncoderModel(config)
