"""Loading the Stable Diffusion pipeline the settings name, and fitting it to the hardware.

Owns: where the model comes from (hub repo id, local diffusers folder, or one ``.safetensors``/``.ckpt``
file), which device and dtype it runs in, and the memory and speed options (CPU offload, attention
slicing, VAE slicing, channels-last, TF32, fused QKV projections, ``torch.compile``). The engine gets a
ready pipeline and never looks at the settings' memory options again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPImageProcessor

from sdbot.config import Settings
from sdbot.errors import ModelLoadFailed

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Where single-file checkpoints (which carry no safety checker) get one when their config folder has none:
# the checker SD 1.x ships with; the repo also holds its image preprocessor config.
HUB_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class Placement:
    """Where the model runs and in which precision."""

    device: torch.device
    dtype: torch.dtype


def resolve_placement(device: str, dtype: str) -> Placement:
    """``auto`` means cuda, then mps, then cpu; half precision on an accelerator, float32 on a CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadFailed("SDBOT_DEVICE=cuda but torch sees no CUDA GPU (a CPU-only build of torch?)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadFailed("SDBOT_DEVICE=mps but this machine has no Metal GPU")
    if dtype != "auto":
        return Placement(torch.device(device), _DTYPES[dtype])
    return Placement(torch.device(device), torch.float32 if device == "cpu" else torch.float16)


def model_display_name(model: str) -> str:
    """The name written into PNGs and shown to users: a repo id as is, a local path by its last part."""
    path = Path(model).expanduser()
    if path.exists():
        return path.stem if path.is_file() else path.name
    return model


def load_pipeline(settings: Settings, placement: Placement) -> StableDiffusionPipeline:
    """The text-to-image pipeline, weights in ``placement.dtype`` but still on the CPU."""
    model = settings.model
    path = Path(model).expanduser()
    try:
        if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            if not path.is_file():
                raise ModelLoadFailed(f"SDBOT_MODEL={model!r}: no such file")
            return _load_single_file(path, settings, placement)
        return StableDiffusionPipeline.from_pretrained(
            str(path) if path.is_dir() else model, torch_dtype=placement.dtype, token=settings.hf_token
        )
    except ModelLoadFailed:
        raise
    except Exception as error:  # diffusers raises OSError, ValueError, hub errors...: one message for all
        raise ModelLoadFailed(f"could not load model {model!r}: {type(error).__name__}: {error}") from error


def _load_single_file(path: Path, settings: Settings, placement: Placement) -> StableDiffusionPipeline:
    """One checkpoint file. Its component configs come from ``SDBOT_MODEL_CONFIG`` when set (needed offline),
    else from the hub repo diffusers infers for the checkpoint; the safety checker comes from the config
    folder when it has one, else from the hub, else the model runs unchecked."""
    checker, extractor = _single_file_safety_checker(settings, placement)
    return StableDiffusionPipeline.from_single_file(
        str(path),
        config=settings.model_config,
        torch_dtype=placement.dtype,
        token=settings.hf_token,
        safety_checker=checker,
        feature_extractor=extractor,
    )


def _single_file_safety_checker(
    settings: Settings, placement: Placement
) -> tuple[StableDiffusionSafetyChecker | None, CLIPImageProcessor | None]:
    config = settings.model_config
    local = config is not None and Path(config, "safety_checker").is_dir()
    repo, checker_folder, extractor_folder = (
        (config, "safety_checker", "feature_extractor") if local else (HUB_SAFETY_CHECKER, None, None)
    )
    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(
            repo, subfolder=checker_folder, torch_dtype=placement.dtype, token=settings.hf_token
        )
        extractor = CLIPImageProcessor.from_pretrained(
            repo, subfolder=extractor_folder, token=settings.hf_token
        )
    except Exception as error:  # offline without a cached checker: run unchecked, and say so at start-up
        log.warning("no safety checker for %s (%s)", settings.model, error)
        return None, None
    return checker, extractor


def prepare_pipeline(pipe: StableDiffusionPipeline, settings: Settings, placement: Placement) -> bool:
    """Apply the memory and speed options, then put the pipeline on its device (or set up offloading).

    Returns whether the UNet was compiled: its first call per shape compiles, so the caller warms it up."""
    on_cuda = placement.device.type == "cuda"
    low_memory = settings.offload != "none" or settings.attention_slicing
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        if not settings.attention_slicing:
            pipe.fuse_qkv_projections()
    if settings.attention_slicing:
        pipe.enable_attention_slicing()
    if low_memory:
        pipe.vae.enable_slicing()  # decode a batch one image at a time
    if settings.offload != "none" and placement.device.type == "cpu":
        log.info("SDBOT_OFFLOAD=%s has no effect on the CPU", settings.offload)
        pipe.to(placement.device)
    elif settings.offload == "model":
        pipe.enable_model_cpu_offload(device=placement.device)
    elif settings.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=placement.device)
    else:
        pipe.to(placement.device)
    if not settings.compile:
        return False
    if not on_cuda or settings.offload != "none":
        log.warning("SDBOT_COMPILE=1 needs a CUDA GPU without offloading: not compiling")
        return False
    pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=True)
    return True


def load_preview_decoder(settings: Settings, placement: Placement) -> AutoencoderTiny | None:
    """The tiny autoencoder named by ``SDBOT_PREVIEW_DECODER``, or None for linear previews."""
    if settings.preview_decoder is None:
        return None
    try:
        decoder = AutoencoderTiny.from_pretrained(
            settings.preview_decoder, torch_dtype=placement.dtype, token=settings.hf_token
        )
    except Exception as error:
        raise ModelLoadFailed(
            f"could not load preview decoder {settings.preview_decoder!r}: {type(error).__name__}: {error}"
        ) from error
    return decoder.to(placement.device).eval()
