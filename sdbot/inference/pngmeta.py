"""Generation parameters in PNG files, in the format AUTOMATIC1111's web UI writes and reads.

Each image carries a ``parameters`` text chunk::

    a red cat <lora:styles/ink:0.8>
    Negative prompt: blurry, badhands
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512,
    Model: stable-diffusion-v1-4, Lora hashes: "styles/ink: 3c2e9d0a41f7", TI hashes: "badhands: 9f0b..."

(the settings on one line) so that it re-imports into the web UI, ComfyUI and other tools ("PNG Info"),
and sites that link resources by hash find the LoRAs and embeddings; ``read_parameters`` reads it back,
the LoRA tags out of the prompt. Values holding a comma, colon or newline are JSON-quoted, as the web UI
does.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdbot.errors import PromptRejected
from sdbot.inference.prompt_syntax import lora_tags, split_loras

PARAMETERS_KEY = "parameters"
_NEGATIVE = "Negative prompt:"
_SETTING = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class LoraUse:
    """A LoRA an image was made with: its name, weight and short hash (``Lora hashes``; may be unknown)."""

    name: str
    weight: float
    hash: str = ""


@dataclass(frozen=True)
class ImageParameters:
    """What made one image: enough to reproduce it here or in another tool. ``prompt`` is without the LoRA
    tags, which ``loras`` holds; ``embeddings`` are the embeddings the prompts used, by name, with hashes."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance: float
    seed: int
    width: int
    height: int
    model: str
    strength: float | None = None  # img2img only ("Denoising strength")
    schedule_type: str = ""
    loras: tuple[LoraUse, ...] = ()
    embeddings: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # settings written by other tools, kept as text


def format_parameters(params: ImageParameters) -> str:
    """The ``parameters`` text, byte for byte as the web UI lays it out."""
    tags = lora_tags(tuple((lora.name, lora.weight) for lora in params.loras))
    lines = [f"{params.prompt} {tags}" if tags else params.prompt]
    if params.negative_prompt:
        lines.append(f"{_NEGATIVE} {params.negative_prompt}")
    settings = {"Steps": str(params.steps), "Sampler": params.sampler}
    if params.schedule_type:
        settings["Schedule type"] = params.schedule_type
    settings |= {
        "CFG scale": f"{params.guidance:g}",
        "Seed": str(params.seed),
        "Size": f"{params.width}x{params.height}",
        "Model": params.model,
    }
    if params.strength is not None:
        settings["Denoising strength"] = f"{params.strength:g}"
    if hashes := _hash_list({lora.name: lora.hash for lora in params.loras if lora.hash}):
        settings["Lora hashes"] = hashes
    if hashes := _hash_list(params.embeddings):
        settings["TI hashes"] = hashes
    settings.update(params.extra)
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in settings.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> ImageParameters:
    """Read a ``parameters`` text back. Raises ValueError when the settings line is missing or incomplete."""
    *prompt_lines, last = text.strip("\n").split("\n")
    settings = {key: _unquote(value) for key, value in _SETTING.findall(last)}
    required = ("Steps", "Sampler", "CFG scale", "Seed", "Size")
    missing = [key for key in required if key not in settings]
    if missing:
        raise ValueError(f"not an image parameters text: missing {', '.join(missing)}")
    prompt: list[str] = []
    negative: list[str] = []
    for line in prompt_lines:
        if line.startswith(_NEGATIVE) and not negative:
            negative.append(line[len(_NEGATIVE) :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    width, _, height = settings.pop("Size").partition("x")
    strength = settings.pop("Denoising strength", None)
    text, tagged = _split_loras("\n".join(prompt))
    lora_hashes = _read_hash_list(settings.pop("Lora hashes", ""))
    return ImageParameters(
        prompt=text,
        negative_prompt="\n".join(negative),
        steps=int(settings.pop("Steps")),
        sampler=settings.pop("Sampler"),
        guidance=float(settings.pop("CFG scale")),
        seed=int(settings.pop("Seed")),
        width=int(width),
        height=int(height),
        model=settings.pop("Model", ""),
        strength=None if strength is None else float(strength),
        schedule_type=settings.pop("Schedule type", ""),
        loras=tuple(LoraUse(name, weight, lora_hashes.get(_alias(name), "")) for name, weight in tagged),
        embeddings=_read_hash_list(settings.pop("TI hashes", "")),
        extra=settings,
    )


def encode_png(image: Image.Image, params: ImageParameters) -> bytes:
    """The image as PNG bytes with its ``parameters`` chunk."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, format_parameters(params))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def read_parameters(png: bytes) -> ImageParameters:
    """The parameters a PNG carries (ValueError when it carries none)."""
    with Image.open(io.BytesIO(png)) as image:
        text = image.info.get(PARAMETERS_KEY)
    if text is None:
        raise ValueError("the PNG has no 'parameters' text chunk")
    return parse_parameters(text)


def _split_loras(prompt: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The prompt's LoRA tags; a tag this bot would refuse (another tool's extra network, a LoRA with two
    weights) stays in the text."""
    try:
        return split_loras(prompt)
    except PromptRejected:
        return prompt, ()


def _hash_list(hashes: dict[str, str]) -> str:
    """``name: hash, ...`` as the web UI writes it, its separators taken out of the names."""
    return ", ".join(f"{_alias(name)}: {short}" for name, short in hashes.items())


def _read_hash_list(text: str) -> dict[str, str]:
    pairs = (item.rpartition(":") for item in text.split(","))
    return {name.strip(): short.strip() for name, _, short in pairs if name.strip()}


def _alias(name: str) -> str:
    return name.replace(":", "").replace(",", "")


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:\n"') else value


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return json.loads(value)
    return value
