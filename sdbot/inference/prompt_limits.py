"""How much of a prompt a model reads, counted in its own tokens; the same rule in the bot and the engine.

CLIP families (SD 1.x, SD 2.x, SDXL) take a long prompt in 75-token chunks (``conditioning``), up to
``MAX_CLIP_CHUNKS`` of them: more would only slow every denoising step. T5 families (SD 3.x, Flux) read up
to their window (the profile's ``prompt_tokens``: 256, or 512 for Flux dev) and nothing past it, so a longer
prompt is refused with its count rather than cut without a word. Families whose text encoder is a language
model take what their pipeline takes.

Counting uses the model's tokenizer as a ``tokenizers.Tokenizer`` (its JSON form crosses from the engine to
the bot in ``ModelInfo``): no torch, no transformers, microseconds per prompt. Weighting markup does not
count; an embedding's name counts as the tokens of its name, a little under what a multi-vector embedding
takes.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from sdbot.errors import PromptRejected
from sdbot.inference.families import FamilyProfile, TextEncoder
from sdbot.inference.prompt_syntax import plain_text

MAX_CLIP_CHUNKS = 6
CLIP_CHUNK = 75  # a 77-token window less its start and end markers


class PromptWindow:
    """The prompt limit of one model. ``tokenizer``: the JSON of the tokenizer whose window bounds a
    prompt (CLIP's, or the T5's); None: the model is not counted."""

    def __init__(self, profile: FamilyProfile, tokenizer: str | None) -> None:
        self._profile = profile
        self._tokenizer = None if tokenizer is None else Tokenizer.from_str(tokenizer)
        if profile.text_encoder is TextEncoder.CLIP:
            self.limit: int | None = MAX_CLIP_CHUNKS * CLIP_CHUNK
        elif profile.text_encoder is TextEncoder.T5:
            self.limit = profile.prompt_tokens
        else:
            self.limit = None

    def count(self, prompt: str) -> int:
        """The tokens of ``prompt``'s text: CLIP's without its start and end markers, the T5's with its end
        marker (as it fills the window)."""
        if self._tokenizer is None:
            return 0
        add_special_tokens = self._profile.text_encoder is not TextEncoder.CLIP
        return len(self._tokenizer.encode(plain_text(prompt), add_special_tokens=add_special_tokens).ids)

    def check(self, label: str, prompt: str) -> None:
        """Raise ``PromptRejected`` when ``prompt`` (the ``label`` of the request: "prompt", "negative
        prompt") has more tokens than the model reads."""
        if self.limit is None or self._tokenizer is None:
            return
        count = self.count(prompt)
        if count > self.limit:
            raise PromptRejected(
                f"the {label} has {count} tokens; {self._profile.label} models read at most {self.limit}"
            )
