"""Loading a model of any family: its text-to-image pipeline, the image-to-image and inpainting pipelines
made on the same modules, its family profile and the safety checker its images go through.

Sources: a hub repo id or a diffusers folder (``AutoPipelineForText2Image``, which picks the family's
pipeline class from ``model_index.json``), or one checkpoint file (the family detected from its tensor
names, then that family's ``from_single_file``; a file holding only the UNet or transformer gets the rest
from its config folder or repo). ``config`` names the folder or repo a single file takes its component
configs from: with a local folder, loading works offline.

Sibling pipelines are constructed on the text-to-image pipeline's modules, never ``from_pipe``: that casts
every shared module to its ``torch_dtype`` (float32 unless told), and a model whose VAE runs in another
precision than its denoiser would lose that. No module is copied: every sibling holds the same objects.

Safety: a model that ships a checker (SD 1.x) keeps it; every other model gets the standalone SD safety
checker (``CompVis/stable-diffusion-safety-checker``, which classifies any RGB image), from a local folder
when given, else from the hub. When none can be loaded the model runs unchecked, and the caller says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import (
    AutoPipelineForText2Image,
    DiffusionPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import load_single_file_checkpoint
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from packaging.version import Version
from transformers import CLIPImageProcessor

from sdbot.errors import ModelLoadFailed
from sdbot.inference.checkpoints import (
    SINGLE_FILE_SUFFIXES,
    CheckpointLayout,
    detect_checkpoint,
    detect_layout,
)
from sdbot.inference.detect import Task, profile_from_pipeline, sibling_class
from sdbot.inference.families import Family, FamilyProfile
from sdbot.inference.sources import inspect_source, pipeline_family

# The keyword that names the weights' dtype: diffusers 0.40 and transformers 4.56 renamed ``torch_dtype`` to
# ``dtype`` and print a FutureWarning at every load given the old name, which older releases still need.
DIFFUSERS_DTYPE = "dtype" if Version(diffusers.__version__) >= Version("0.40") else "torch_dtype"
TRANSFORMERS_DTYPE = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"

log = logging.getLogger(__name__)

# The pipeline class of each family whose checkpoints load from one file, and its denoiser's class.
SINGLE_FILE_PIPELINES: dict[Family, type[DiffusionPipeline]] = {
    Family.SD1: StableDiffusionPipeline,
    Family.SD2: StableDiffusionPipeline,
    Family.SDXL: StableDiffusionXLPipeline,
    Family.SD3: StableDiffusion3Pipeline,
    Family.FLUX: FluxPipeline,
}
SINGLE_FILE_DENOISERS: dict[Family, tuple[str, type[torch.nn.Module]]] = {
    Family.SD1: ("unet", UNet2DConditionModel),
    Family.SD2: ("unet", UNet2DConditionModel),
    Family.SDXL: ("unet", UNet2DConditionModel),
    Family.SD3: ("transformer", SD3Transformer2DModel),
    Family.FLUX: ("transformer", FluxTransformer2DModel),
}


@dataclass(frozen=True)
class SafetyModel:
    """The SD safety checker and its image processor; ``source``: where they came from, for the logs."""

    checker: StableDiffusionSafetyChecker
    feature_extractor: CLIPImageProcessor
    source: str


@dataclass(frozen=True)
class ModelPipelines:
    """A loaded model: its pipelines (sharing their modules), profile and safety checker (None: unchecked)."""

    text_to_image: DiffusionPipeline
    image_to_image: DiffusionPipeline | None
    inpaint: DiffusionPipeline | None
    profile: FamilyProfile
    safety: SafetyModel | None

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or the transformer: the module every denoising step runs."""
        return denoiser(self.text_to_image)


def denoiser(pipe: DiffusionPipeline) -> torch.nn.Module:
    """A pipeline's UNet, or its transformer for the DiT families."""
    return pipe.components.get("unet") or pipe.components["transformer"]


def load_model(
    source: str,
    *,
    dtype: torch.dtype,
    config: str | None = None,
    token: str | None = None,
    standalone_checker: Callable[[], SafetyModel | None] = lambda: None,
) -> ModelPipelines:
    """Load ``source`` (hub repo id, diffusers folder, or checkpoint file) in ``dtype`` on the CPU.

    A model without its own checker gets the one in a single file's config folder, else
    ``standalone_checker()`` (the engine loads that once and shares it; None: the model runs unchecked).
    Raises ``ModelLoadFailed`` with a one-line reason."""
    path = Path(source).expanduser()
    single_file = path.suffix.lower() in SINGLE_FILE_SUFFIXES
    try:
        if single_file:
            pipe = _load_single_file(path, config=config, dtype=dtype, token=token)
        else:
            pipe = AutoPipelineForText2Image.from_pretrained(
                str(path) if path.is_dir() else source, token=token, **{DIFFUSERS_DTYPE: dtype}
            )
    except ModelLoadFailed:
        raise
    except Exception as error:  # diffusers raises OSError, ValueError, hub errors...: one message for all
        raise ModelLoadFailed(f"could not load model {source!r}: {type(error).__name__}: {error}") from error
    safety = _own_safety_checker(pipe)
    if safety is None and single_file and config is not None and Path(config, "safety_checker").is_dir():
        safety = load_safety_checker(config, dtype=dtype, token=token)
    if safety is None:
        safety = standalone_checker()
    return ModelPipelines(
        text_to_image=pipe,
        image_to_image=sibling(pipe, Task.IMAGE_TO_IMAGE),
        inpaint=sibling(pipe, Task.INPAINT),
        profile=profile_from_pipeline(pipe),
        safety=safety,
    )


def source_family(source: str, *, token: str | None = None) -> Family:
    """A model's family before it loads: from what is on this machine (``sources.inspect_source``), else from
    the pipeline class its hub repo's ``model_index.json`` names. Raises ``ModelLoadFailed`` when neither can
    be read."""
    family = inspect_source(source).family
    if family is not None:
        return family
    try:
        index = DiffusionPipeline.load_config(source, token=token)
    except Exception as error:  # hub errors, a folder without model_index.json
        raise ModelLoadFailed(f"could not read the pipeline of {source!r}: {error}") from error
    return pipeline_family(index.get("_class_name", ""))


def sibling(pipe: DiffusionPipeline, task: Task) -> DiffusionPipeline | None:
    """``pipe``'s family pipeline for ``task``, holding the very same modules (and pipeline options, such as
    SDXL's ``force_zeros_for_empty_prompt``); None where the family has no such pipeline."""
    cls = sibling_class(pipe, task)
    if cls is None:
        return None
    modules, options = cls._get_signature_keys(cls)
    kwargs = {name: module for name, module in pipe.components.items() if name in modules}
    kwargs |= {name: value for name, value in pipe.config.items() if name in options}
    return cls(**kwargs)


def load_safety_checker(source: str, *, dtype: torch.dtype, token: str | None = None) -> SafetyModel | None:
    """The standalone SD safety checker from ``source``: a hub repo or folder laid out like
    ``CompVis/stable-diffusion-safety-checker`` (model and preprocessor config side by side), or a diffusers
    pipeline folder (``safety_checker/`` and ``feature_extractor/``). None, with a warning, when it cannot
    be loaded (offline without a cached copy, say)."""
    pipeline_layout = Path(source, "safety_checker").is_dir()
    checker_folder, extractor_folder = (
        ("safety_checker", "feature_extractor") if pipeline_layout else ("", "")
    )
    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(
            source, subfolder=checker_folder, token=token, **{TRANSFORMERS_DTYPE: dtype}
        )
        extractor = CLIPImageProcessor.from_pretrained(source, subfolder=extractor_folder, token=token)
    except Exception as error:  # hub errors, missing files: the unchecked policy applies; start-up says so
        log.warning("could not load the safety checker from %s (%s: %s)", source, type(error).__name__, error)
        return None
    return SafetyModel(checker.eval(), extractor, source)


def _own_safety_checker(pipe: DiffusionPipeline) -> SafetyModel | None:
    checker = pipe.components.get("safety_checker")
    extractor = pipe.components.get("feature_extractor")
    if checker is None or extractor is None:
        return None
    return SafetyModel(checker, extractor, "the model's own")


def _load_single_file(
    path: Path, *, config: str | None, dtype: torch.dtype, token: str | None
) -> DiffusionPipeline:
    """One checkpoint file, loaded as its detected family."""
    if not path.is_file():
        raise ModelLoadFailed(f"{path}: no such file")
    if path.suffix.lower() not in (".safetensors", ".ckpt"):
        raise ModelLoadFailed(
            f"{path.name}: diffusers loads .safetensors and .ckpt files: rename it {path.stem}.safetensors"
        )
    layout = _detect(path)
    options: dict[str, object] = {"config": config, DIFFUSERS_DTYPE: dtype, "token": token}
    if config is not None and Path(config).is_dir():
        options["local_files_only"] = True
    if layout.denoiser_only:
        if config is None:
            raise ModelLoadFailed(
                f"{path.name} holds only the {SINGLE_FILE_DENOISERS[layout.family][0]}: set its config to a "
                "diffusers folder or repo of the same model (for the text encoders and the VAE)"
            )
        name, denoiser_class = SINGLE_FILE_DENOISERS[layout.family]
        module = denoiser_class.from_single_file(str(path), subfolder=name, **options)
        options.pop("config")
        return AutoPipelineForText2Image.from_pretrained(config, **{name: module}, **options)
    pipeline_class = SINGLE_FILE_PIPELINES[layout.family]
    if pipeline_class is StableDiffusionPipeline:
        # its checker is loaded apart (``load_safety_checker``), as for every family
        options |= {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return pipeline_class.from_single_file(str(path), **options)


def _detect(path: Path) -> CheckpointLayout:
    if path.suffix.lower() == ".ckpt":  # a pickle has no header: its shapes come from loading it
        state = load_single_file_checkpoint(str(path))
        return detect_layout({key: tuple(value.shape) for key, value in state.items()}, path.name)
    return detect_checkpoint(path)
