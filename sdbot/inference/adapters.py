"""LoRAs and textual-inversion embeddings on a loaded pipeline.

``LoraAdapters`` keeps LoRAs loaded as peft adapters (``load_lora_weights`` under an adapter name of its own)
and activates, for each batch, exactly the LoRAs and weights the batch asks for (``set_adapters``); a batch
without LoRAs runs with every adapter disabled, so nothing of an earlier batch's LoRA reaches it. The most
recently used ``keep`` files stay loaded, so a queue that switches between a few LoRAs reads no file
twice; older ones are deleted from the pipeline. A file replaced on disk is a new version and loads again.

``Embeddings`` loads every embedding of the pipeline's family under its name as the token (SDXL's into both
text encoders), and follows the folder: new files load before the next batch, removed ones unload.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from diffusers import DiffusionPipeline
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from transformers.utils import logging as transformers_logging

from sdbot.errors import GenerationFailed, InvalidRequest
from sdbot.inference.addon_families import SDXL
from sdbot.inference.addons import Addon, AddonLibrary, embedding_hash, lora_hash
from sdbot.inference.pngmeta import LoraUse
from sdbot.inference.prompt_syntax import LoraRequest

log = logging.getLogger(__name__)

KEEP_LOADED = 8  # LoRA files kept loaded beyond those of the current batch

_FileVersion = tuple[str, int, int]  # path, mtime_ns, size


class LoraAdapters:
    """The LoRAs of ``library`` on ``pipe``, a pipeline of ``family``. Not thread-safe: the engine's lock
    serialises its calls."""

    def __init__(
        self, pipe: DiffusionPipeline, library: AddonLibrary, family: str, *, keep: int = KEEP_LOADED
    ) -> None:
        self._pipe = pipe
        self._library = library
        self._family = family
        self._keep = keep
        self._loaded: OrderedDict[_FileVersion, str] = OrderedDict()  # least recently used first
        self._names = (f"lora{n}" for n in itertools.count(1))
        self._layers: list[BaseTunerLayer] | None = None  # every LoRA layer; None: to be found again
        self._active: tuple[tuple[str, ...], tuple[float, ...]] | None = None  # None: all off
        self._unfused = False

    @property
    def loaded(self) -> int:
        return len(self._loaded)

    @property
    def library(self) -> AddonLibrary:
        return self._library

    def apply(self, loras: Sequence[LoraRequest]) -> tuple[LoraUse, ...]:
        """Make exactly ``loras`` active, at their weights (none: every adapter off); returns them as the PNG
        names them. Raises ``GenerationFailed`` for a LoRA that is gone from the folder or unreadable,
        ``InvalidRequest`` for one of another family."""
        if not loras:
            self._activate(None)
            return ()
        addons = [self._find(name) for name, _ in loras]
        self._unfuse_projections()
        adapters = [self._load(addon) for addon in addons]
        self._evict(keep=set(adapters))
        self._activate((tuple(adapters), tuple(weight for _, weight in loras)))
        return tuple(
            LoraUse(addon.name, weight, lora_hash(addon.path))
            for addon, (_, weight) in zip(addons, loras, strict=True)
        )

    def _activate(self, active: tuple[tuple[str, ...], tuple[float, ...]] | None) -> None:
        """Set the active adapters and their weights on every LoRA layer (None: all off). Done on the layers
        found once per change of the loaded set, where diffusers' ``set_adapters`` walks every module of
        the model on each call (most of a switch's cost)."""
        if self._layers is not None and active == self._active:
            return
        toggle = self._layers is None or (active is None) != (self._active is None)
        if self._layers is None:
            modules = [m for m in self._pipe.components.values() if isinstance(m, torch.nn.Module)]
            self._layers = [
                layer for module in modules for layer in module.modules() if isinstance(layer, BaseTunerLayer)
            ]
        for layer in self._layers:
            if toggle:
                layer.enable_adapters(active is not None)
            if active is not None:
                adapters, weights = active
                layer.set_adapter(list(adapters), inference_mode=True)
                for adapter, weight in zip(adapters, weights, strict=True):
                    layer.set_scale(adapter, weight)
        self._active = active

    def _find(self, name: str) -> Addon:
        addon = self._library.find(name)
        if addon is None:
            raise GenerationFailed(f"the LoRA {name} is no longer in the LoRA folder")
        if addon.family != self._family:
            raise InvalidRequest(f"the LoRA {name} is for {addon.family} models, not {self._family}")
        return addon

    def _load(self, addon: Addon) -> str:
        version = _version(addon)
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        adapter = next(self._names)
        try:
            with _quiet_transformers():
                self._pipe.load_lora_weights(str(addon.path), adapter_name=adapter)
        except Exception as error:
            self._delete(adapter)
            raise GenerationFailed(f"the LoRA {addon.name} could not be loaded: {error}") from error
        self._loaded[version] = adapter
        self._layers = None  # loading made the new adapter the active one: set them all again
        log.info("loaded LoRA %s as adapter %s", addon.name, adapter)
        return adapter

    def _unfuse_projections(self) -> None:
        """Fused attention projections (the engine fuses them on CUDA) compute q, k and v from one weight
        that holds none of a LoRA's updates: a LoRA needs the separate projections, so they come back for
        good (a little slower, the same pixels without a LoRA)."""
        if self._unfused:
            return  # nothing fuses them again: the engine fuses a model's projections when it loads it
        denoiser = self._pipe.components.get("unet") or self._pipe.components.get("transformer")
        processors = getattr(denoiser, "attn_processors", {})
        if any(type(processor).__name__.startswith("Fused") for processor in processors.values()):
            denoiser.unfuse_qkv_projections()
            log.info("attention projections unfused for LoRAs")
        self._unfused = True

    def _evict(self, keep: set[str]) -> None:
        """Delete the least recently used adapters beyond ``keep`` plus ``self._keep`` others."""
        for version, adapter in list(self._loaded.items()):
            if len(self._loaded) <= len(keep) + self._keep:
                break
            if adapter not in keep:
                del self._loaded[version]
                self._delete(adapter)

    def _delete(self, adapter: str) -> None:
        present = {name for names in self._pipe.get_list_adapters().values() for name in names}
        if adapter in present:
            self._pipe.delete_adapters(adapter)
            self._layers = None


class Embeddings:
    """The embeddings of ``library`` that fit ``pipe`` (of ``family``), kept loaded as tokens. Not
    thread-safe, as ``LoraAdapters``."""

    def __init__(self, pipe: DiffusionPipeline, library: AddonLibrary, family: str) -> None:
        self._pipe = pipe
        self._library = library
        self._family = family
        self._seen: dict[str, _FileVersion] = {}  # tried, loaded or not: a bad file is tried once
        self._loaded: dict[str, Addon] = {}

    def refresh(self) -> None:
        """Load new or changed files of the family and unload those gone."""
        wanted = {addon.name: addon for addon in self._library.for_family(self._family)}
        versions = {name: _version(addon) for name, addon in wanted.items()}
        for name, version in list(self._seen.items()):
            if versions.get(name) != version:
                self._unload(name)
        for name, addon in wanted.items():
            if name not in self._seen:
                self._seen[name] = versions[name]
                self._load(addon)

    def hashes(self, text: str) -> dict[str, str]:
        """The loaded embeddings ``text`` uses, with their short hashes (the PNG's ``TI hashes``)."""
        return {
            name: embedding_hash(addon.path)
            for name, addon in self._loaded.items()
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        }

    def _load(self, addon: Addon) -> None:
        try:
            state = load_file(str(addon.path))
            if self._family == SDXL:
                self._pipe.load_textual_inversion(state["clip_l"], token=addon.name)
                self._pipe.load_textual_inversion(
                    state["clip_g"],
                    token=addon.name,
                    text_encoder=self._pipe.text_encoder_2,
                    tokenizer=self._pipe.tokenizer_2,
                )
            else:
                self._pipe.load_textual_inversion(state, token=addon.name)
        except Exception as error:  # a bad file (or a name the tokenizer has as a word) stops no batch
            log.warning("embedding %s is not loaded: %s", addon.path, error)
            self._remove_tokens(addon.name)
            return
        self._loaded[addon.name] = addon
        log.info("loaded embedding %s (%d vectors)", addon.name, addon.vectors)

    def _unload(self, name: str) -> None:
        del self._seen[name]
        if self._loaded.pop(name, None) is not None:
            self._remove_tokens(name)

    def _remove_tokens(self, name: str) -> None:
        """Remove ``name`` and the extra tokens of a multi-vector embedding (``name_1``, ...) from each
        tokenizer that has them."""
        encoders = [(self._pipe.tokenizer, self._pipe.text_encoder)]
        if self._family == SDXL:
            encoders.append((self._pipe.tokenizer_2, self._pipe.text_encoder_2))
        extra = re.compile(rf"{re.escape(name)}(_\d+)?")
        for tokenizer, text_encoder in encoders:
            added = [token.content for token in tokenizer.added_tokens_decoder.values() if not token.special]
            tokens = [token for token in added if extra.fullmatch(token)]
            if tokens:
                self._pipe.unload_textual_inversion(tokens, tokenizer=tokenizer, text_encoder=text_encoder)
                # diffusers rebuilds a transformers-5 tokenizer's backend, and with it drops the wrapper by
                # which CLIP's decodes without its "</w>" suffixes; compel decodes token ids to expand
                # embeddings, and would read "a</w>red</w>cat</w>" for "a red cat" after this
                rewrap = getattr(tokenizer, "_wrap_decode_method_backend_tokenizer", None)
                if rewrap is not None:
                    rewrap()


def _version(addon: Addon) -> _FileVersion:
    stat = addon.path.stat()
    return (str(addon.path), stat.st_mtime_ns, stat.st_size)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading a second adapter into a text encoder makes transformers 5 report the first one's weights as
    missing, with a progress bar per load: noise in the engine's log on every LoRA switch. Real mismatches
    still raise."""
    logger = logging.getLogger("transformers.integrations.peft")
    level = logger.level
    logger.setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        transformers_logging.enable_progress_bar()
