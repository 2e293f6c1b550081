"""Loading the models the settings name, and fitting them to the hardware.

Owns: which device and dtype the models run in; the memory and speed options (CPU offload, attention
slicing, VAE slicing, channels-last, TF32, fused QKV projections, ``torch.compile``), applied to each model
once when it loads; moving a model between the device and CPU memory (the memory manager decides when);
the memory budgets; the standalone safety checker, loaded once and shared by every model without its own;
and each model's preview maker (a tiny autoencoder per family from ``SDBOT_PREVIEW_DECODER``, else the
linear approximation). Every model comes out as a ``ModelRunner``; the engine never reads the memory
options again.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderTiny

from sdbot.config import Settings
from sdbot.errors import ModelLoadFailed
from sdbot.inference.addons import AddonKind, AddonLibrary
from sdbot.inference.extras import ModelExtras
from sdbot.inference.families import Family
from sdbot.inference.modelhash import model_hash
from sdbot.inference.pipelines import (
    DIFFUSERS_DTYPE,
    ModelPipelines,
    SafetyModel,
    denoiser,
    load_model,
    load_safety_checker,
    source_family,
)
from sdbot.inference.previews import (
    TINY_DECODERS,
    LinearPreview,
    PreviewMaker,
    TinyDecoderPreview,
    latent_format,
)
from sdbot.inference.runner import ModelRunner
from sdbot.library import ModelEntry

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Below the GPU's memory, what the weights may not take: activations (a 1024² SDXL batch of four needs a few
# GiB), the CUDA context and the allocator's fragmentation.
GPU_MARGIN_FRACTION, GPU_MARGIN_MIN = 0.2, 3 * 2**30
ALL_FAMILIES = "tiny"  # SDBOT_PREVIEW_DECODER value: each family's tiny autoencoder from the hub
MODEL_HASH_CACHE = "model-hashes.json"  # beside the database: checkpoint files' hashes, by file version
# Trained in bfloat16: their T5 or language-model text encoders overflow in float16 (black or NaN images).
BFLOAT16_FAMILIES = frozenset({Family.SD3, Family.FLUX, Family.OTHER})


@dataclass(frozen=True)
class Placement:
    """Where the models run and in which precision."""

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


def memory_budgets(settings: Settings, placement: Placement) -> tuple[int | None, int | None]:
    """Bytes of weights the device and CPU memory may hold (None: no bound).

    The device's: ``SDBOT_GPU_MEMORY``, else a CUDA GPU's memory less a margin (a fifth, at least 3 GiB);
    none on a CPU or Apple's shared memory, and none with CPU offload, which keeps only the running
    component on the GPU anyway. CPU memory's (models moved off the device): ``SDBOT_CPU_MEMORY``, else half
    the machine's RAM."""
    device_budget = settings.gpu_memory
    if settings.offload != "none":
        device_budget = None
    elif device_budget is None and placement.device.type == "cuda":
        total = torch.cuda.get_device_properties(placement.device).total_memory
        device_budget = total - max(GPU_MARGIN_MIN, int(total * GPU_MARGIN_FRACTION))
    parked_budget = settings.cpu_memory
    if parked_budget is None:
        parked_budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    return device_budget, parked_budget


def model_size(model: ModelPipelines) -> int:
    """Bytes of a model's weights (each tensor once; the shared standalone checker is not the model's)."""
    tensors = {
        tensor.data_ptr(): tensor.numel() * tensor.element_size()
        for module in model.text_to_image.components.values()
        if isinstance(module, torch.nn.Module)
        for tensor in (*module.parameters(), *module.buffers())
    }
    return sum(tensors.values())


class ModelLoader:
    """Loads models as runners with the settings' options, and moves them on and off the device."""

    def __init__(self, settings: Settings, placement: Placement) -> None:
        self._settings = settings
        self._placement = placement
        self._decoder_sources = preview_decoder_sources(settings.preview_decoder)
        self._warned_offload = False
        self._decoders: dict[str, AutoencoderTiny] = {}  # by source: shared by the models of a family
        self._hash_cache = settings.db_path.with_name(MODEL_HASH_CACHE)
        # shared by every model: each takes the files of its family
        self._loras = AddonLibrary(settings.lora_dir, AddonKind.LORA)
        self._embeddings = AddonLibrary(settings.embeddings_dir, AddonKind.EMBEDDING)

    @property
    def placement(self) -> Placement:
        return self._placement

    def load(self, entry: ModelEntry) -> ModelRunner:
        """Load ``entry`` into CPU memory, with the memory and speed options applied."""
        settings = self._settings
        model = load_model(
            entry.source,
            dtype=self.dtype_for(entry),
            config=entry.config,
            token=settings.hf_token,
            standalone_checker=lambda: self._shared_checker,
        )
        if model.safety is None:
            log.warning(
                "model %s has no safety checker: NSFW flags are unknown and SDBOT_UNCHECKED_POLICY applies",
                entry.name,
            )
        self._configure(model)
        return ModelRunner(
            entry.name,
            model,
            ModelExtras(model.text_to_image, model.profile, self._loras, self._embeddings),
            previews=self._previews(entry.name, model),
            tile_upscales=settings.vae_tiling,
            model_hash=model_hash(Path(entry.source), self._hash_cache) if entry.is_file else None,
        )

    def dtype_for(self, entry: ModelEntry) -> torch.dtype:
        """The precision ``entry`` runs in: ``SDBOT_DTYPE``, or for ``auto`` on a CUDA GPU float16, except
        bfloat16 for the families trained in it (when the GPU has it)."""
        placement = self._placement
        if (
            self._settings.dtype != "auto"
            or placement.device.type != "cuda"
            or not torch.cuda.is_bf16_supported()
        ):
            return placement.dtype
        try:
            family = source_family(entry.source, token=self._settings.hf_token)
        except ModelLoadFailed:
            return placement.dtype  # loading it says what is wrong
        return torch.bfloat16 if family in BFLOAT16_FAMILIES else placement.dtype

    def to_device(self, runner: ModelRunner) -> None:
        pipe = runner.model.text_to_image
        if self._placement.device.type == "cpu":
            return  # it loaded there
        if self._settings.offload == "none":
            pipe.to(self._placement.device)
        elif getattr(pipe, "_offload_gpu_id", None) is None:  # offloading hooks are set once
            if self._settings.offload == "model":
                pipe.enable_model_cpu_offload(device=self._placement.device)
            else:
                pipe.enable_sequential_cpu_offload(device=self._placement.device)

    def park(self, runner: ModelRunner) -> None:
        """To CPU memory. Its GPU memory stays with torch's allocator, for the model that comes next."""
        if self._placement.device.type != "cpu":
            runner.model.text_to_image.to("cpu")

    @property
    def compiles(self) -> bool:
        """Whether models are compiled (their first call per shape compiles: warm them up)."""
        return (
            self._settings.compile
            and self._placement.device.type == "cuda"
            and self._settings.offload == "none"
        )

    def _configure(self, model: ModelPipelines) -> None:
        settings, placement = self._settings, self._placement
        pipe = model.text_to_image
        unet, vae = pipe.components.get("unet"), pipe.vae
        on_cuda = placement.device.type == "cuda"
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            for convolutional in (unet, vae):
                if convolutional is not None:
                    convolutional.to(memory_format=torch.channels_last)
            if not settings.attention_slicing:
                for module in (denoiser(pipe), vae):
                    if hasattr(module, "fuse_qkv_projections"):
                        module.fuse_qkv_projections()
        if settings.attention_slicing and hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing()
        if settings.offload != "none" or settings.attention_slicing:
            vae.enable_slicing()  # decode a batch one image at a time
        if settings.offload != "none" and placement.device.type == "cpu" and not self._warned_offload:
            log.info("SDBOT_OFFLOAD=%s has no effect on the CPU", settings.offload)
            self._warned_offload = True
        if settings.compile and not self.compiles:
            log.warning("SDBOT_COMPILE=1 needs a CUDA GPU without offloading: not compiling")
        if self.compiles:
            # in place: the image-to-image and inpainting pipelines hold the same module
            denoiser(pipe).compile(mode="max-autotune", fullgraph=True)

    @functools.cached_property
    def _shared_checker(self) -> SafetyModel | None:
        source = self._settings.safety_checker
        if source is None:
            return None
        checker = load_safety_checker(source, dtype=self._placement.dtype, token=self._settings.hf_token)
        if checker is not None:
            checker.checker.to(self._placement.device)  # small, and every model's images go through it
        return checker

    def _previews(self, name: str, model: ModelPipelines) -> PreviewMaker | None:
        profile = model.profile
        source = self._decoder_sources.get(profile.family) or self._decoder_sources.get(None)
        if source is not None:
            decoder = self._tiny_decoder(source)
            if decoder.config.latent_channels == profile.latent_channels:
                return TinyDecoderPreview(decoder)
            if profile.family in self._decoder_sources:
                raise ModelLoadFailed(
                    f"preview decoder {source!r} has {decoder.config.latent_channels} latent channels; "
                    f"model {name} ({profile.label}) has {profile.latent_channels}"
                )
        known = latent_format(profile, model.text_to_image.vae.config)
        if known is None:
            log.info("no previews for model %s: sdbot knows no RGB factors for its latents", name)
            return None
        return LinearPreview(known)

    def _tiny_decoder(self, source: str) -> AutoencoderTiny:
        if source in self._decoders:
            return self._decoders[source]
        try:
            decoder = AutoencoderTiny.from_pretrained(
                source, token=self._settings.hf_token, **{DIFFUSERS_DTYPE: self._placement.dtype}
            )
        except Exception as error:
            raise ModelLoadFailed(
                f"could not load preview decoder {source!r}: {type(error).__name__}: {error}"
            ) from error
        self._decoders[source] = decoder.to(self._placement.device).eval()
        return self._decoders[source]


def preview_decoder_sources(value: str | None) -> dict[Family | None, str]:
    """``SDBOT_PREVIEW_DECODER``: comma-separated ``family=source`` entries (``sdxl=madebyollin/taesdxl``),
    ``tiny`` for each family's tiny autoencoder from the hub, or one bare source for the models whose
    latent channels match it (the key None)."""
    sources: dict[Family | None, str] = {}
    for entry in filter(None, (part.strip() for part in (value or "").split(","))):
        family, separator, source = entry.partition("=")
        if entry == ALL_FAMILIES:
            sources |= TINY_DECODERS
        elif separator:
            try:
                sources[Family(family.strip().lower())] = source.strip()
            except ValueError:
                families = ", ".join(f.value for f in Family)
                raise ModelLoadFailed(
                    f"SDBOT_PREVIEW_DECODER: {family!r} is no model family (use one of {families})"
                ) from None
        else:
            sources[None] = entry
    return sources


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()
