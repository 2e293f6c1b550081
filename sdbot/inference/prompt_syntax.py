"""The prompt syntax of AUTOMATIC1111's web UI, read without torch: LoRA tags and attention weighting.

``split_loras`` takes ``<lora:NAME:WEIGHT>`` tags out of a prompt (weight optional, default 1; several
allowed; ``<lyco:...>`` is the same, as in the web UI) and returns the text without them. ``parse_weighted``
reads the weighting markup the web UI defines:

- ``(words)`` multiplies the attention to ``words`` by 1.1, ``[words]`` divides it by 1.1; both nest;
- ``(words:1.5)`` sets a factor (``(words:0.5)`` weakens);
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the characters themselves;
- ``BREAK`` (in capitals) starts a new 75-token chunk of the text encoder.

The result is a list of sections (split at ``BREAK``), each a list of ``Fragment`` (text, weight), which the
engine hands to compel as fragments; no string is re-escaped into compel's own syntax, whose ``+``, ``-``,
``.`` and quotes mean something in plain prompts too (``C++``, ``half-``). An unclosed bracket weights the
rest of the prompt, a stray closing one is text, as in the web UI.

Weighting works for the CLIP families (SD 1.x, SD 2.x, SDXL). Families whose prompts go to T5 or a language
model (SD 3.x, Flux and the others) take the plain text: ``plain_text`` removes the markup, and
``has_weighting`` tells whether there was any to remove, so that the member can be told. The web UI's prompt
editing (``[from:to:when]``) and alternation (``[a|b]``) are refused rather than read as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdbot.errors import PromptRejected

LoraRequest = tuple[str, float]  # a LoRA's name and weight, as a job's parameters hold them

ATTENTION_UP = 1.1
ATTENTION_DOWN = 1 / 1.1
LORA_TAGS = ("lora", "lyco")
BREAK = "BREAK"

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                     # an escaped bracket or backslash
    | \(                             # opens a stronger group
    | \[                             # opens a weaker group
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # closes a group with an explicit weight
    | \)                             # closes a stronger group
    | \]                             # closes a weaker group
    | [^\\()\[\]:]+                  # text
    | [:\\]                          # a colon or lone backslash that is text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_EDITING = re.compile(r"(?<!\\)\[[^\[\]()]*[:|][^\[\]()]*(?<!\\)\]")


@dataclass(frozen=True)
class Fragment:
    text: str
    weight: float = 1.0


Section = list[Fragment]


def split_loras(prompt: str) -> tuple[str, tuple[LoraRequest, ...]]:
    """The prompt without its LoRA tags, and the LoRAs they ask for, in order. Raises ``PromptRejected`` for
    a tag it cannot read, a LoRA named twice, or another kind of extra network (hypernetworks)."""
    loras: list[LoraRequest] = []
    for match in _EXTRA_NETWORK.finditer(prompt):
        kind, arguments = match[1], match[2]
        if kind not in LORA_TAGS:
            raise PromptRejected(f"`{match[0]}`: sdbot applies LoRAs only (`<lora:NAME:WEIGHT>`), not {kind}")
        name, *weights = (part.strip() for part in arguments.split(":"))
        if not name or len(weights) > 1:
            raise PromptRejected(
                f"`{match[0]}`: write a LoRA as `<lora:NAME>` or `<lora:NAME:WEIGHT>` "
                "(one weight for the whole LoRA)"
            )
        weight = _number(weights[0], match[0]) if weights else 1.0
        if any(name == seen for seen, _ in loras):
            raise PromptRejected(f"the LoRA `{name}` is named twice in the prompt")
        loras.append((name, weight))
    return _tidy(_EXTRA_NETWORK.sub(" ", prompt)) if loras else prompt, tuple(loras)


def lora_tags(loras: tuple[LoraRequest, ...]) -> str:
    """The tags that ask for ``loras``, as the web UI writes them into a prompt."""
    return " ".join(f"<lora:{name}:{weight:g}>" for name, weight in loras)


def parse_weighted(prompt: str) -> list[Section]:
    """The prompt's sections (split at ``BREAK``) as weighted fragments; runs of equal weight are merged."""
    if _EDITING.search(prompt):
        raise PromptRejected(
            "prompt editing `[from:to:when]` and alternation `[a|b]` are not supported; "
            "escape brackets you mean as text: `\\[`"
        )
    sections: list[list[list]] = [[]]  # [text, weight] pairs, mutable while brackets close
    stronger: list[tuple[int, int]] = []  # (section, fragment index) where each open "(" began
    weaker: list[tuple[int, int]] = []

    def scale(start: tuple[int, int], factor: float) -> None:
        first_section, first = start
        for index in range(first_section, len(sections)):
            for fragment in sections[index][first if index == first_section else 0 :]:
                fragment[1] *= factor

    for match in _TOKEN.finditer(prompt):
        token, weight = match[0], match["weight"]
        here = (len(sections) - 1, len(sections[-1]))
        if token.startswith("\\") and len(token) == 2:
            sections[-1].append([token[1], 1.0])
        elif token == "(":
            stronger.append(here)
        elif token == "[":
            weaker.append(here)
        elif weight is not None and stronger:
            scale(stronger.pop(), _number(weight, token.strip()))
        elif token == ")" and stronger:
            scale(stronger.pop(), ATTENTION_UP)
        elif token == "]" and weaker:
            scale(weaker.pop(), ATTENTION_DOWN)
        else:
            for index, part in enumerate(_BREAK.split(token)):
                if index:
                    sections.append([])
                sections[-1].append([part, 1.0])
    for start in stronger:
        scale(start, ATTENTION_UP)
    for start in weaker:
        scale(start, ATTENTION_DOWN)
    return [_merged(section) for section in sections]


def plain_text(prompt: str) -> str:
    """The prompt as a family without weighting reads it: markup and ``BREAK`` removed, escapes resolved."""
    return _tidy(" ".join("".join(f.text for f in section) for section in parse_weighted(prompt)))


def has_weighting(prompt: str) -> bool:
    """Whether the prompt holds markup that ``plain_text`` would drop (weights, ``BREAK``, escapes)."""
    return plain_text(prompt) != _tidy(prompt)


def _merged(section: list[list]) -> Section:
    merged: Section = []
    for text, weight in section:
        if not text:
            continue
        if merged and merged[-1].weight == weight:
            merged[-1] = Fragment(merged[-1].text + text, weight)
        else:
            merged.append(Fragment(text, weight))
    return merged


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PromptRejected(f"`{where}`: `{text}` is not a number") from None


def _tidy(text: str) -> str:
    """Runs of spaces collapsed and the commas a removed tag leaves behind (``a , , b``, a trailing ``,``)
    dropped; line breaks are kept."""
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r" +,", ",", text)
    text = re.sub(r",( *,)+", ",", text)
    return text.strip(" ,\n")
