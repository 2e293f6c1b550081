"""Generation parameters in PNG files, in the format AUTOMATIC1111's web UI writes and reads.

Each image carries a ``parameters`` text chunk::

    a red cat
    Negative prompt: blurry
    Steps: 30, Sampler: PLMS, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: stable-diffusion-v1-4

so that it re-imports into the web UI, ComfyUI and other tools ("PNG Info"), and ``read_parameters`` reads
it back. Values holding a comma, colon or newline are JSON-quoted, as the web UI does.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
_NEGATIVE = "Negative prompt:"
_SETTING = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')

# diffusers scheduler class -> the web UI's sampler name, so that other tools pick the same sampler
SAMPLER_NAMES = {
    "PNDMScheduler": "PLMS",
    "DDIMScheduler": "DDIM",
    "LMSDiscreteScheduler": "LMS",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "HeunDiscreteScheduler": "Heun",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}


@dataclass(frozen=True)
class ImageParameters:
    """What made one image: enough to reproduce it here or in another tool."""

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
    extra: dict[str, str] = field(default_factory=dict)  # settings written by other tools, kept as text


def sampler_name(scheduler_class_name: str) -> str:
    return SAMPLER_NAMES.get(scheduler_class_name, scheduler_class_name)


def format_parameters(params: ImageParameters) -> str:
    """The ``parameters`` text, byte for byte as the web UI lays it out."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"{_NEGATIVE} {params.negative_prompt}")
    settings = {
        "Steps": str(params.steps),
        "Sampler": params.sampler,
        "CFG scale": f"{params.guidance:g}",
        "Seed": str(params.seed),
        "Size": f"{params.width}x{params.height}",
        "Model": params.model,
    }
    if params.strength is not None:
        settings["Denoising strength"] = f"{params.strength:g}"
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
    return ImageParameters(
        prompt="\n".join(prompt),
        negative_prompt="\n".join(negative),
        steps=int(settings.pop("Steps")),
        sampler=settings.pop("Sampler"),
        guidance=float(settings.pop("CFG scale")),
        seed=int(settings.pop("Seed")),
        width=int(width),
        height=int(height),
        model=settings.pop("Model", ""),
        strength=None if strength is None else float(strength),
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


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:\n"') else value


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return json.loads(value)
    return value
