"""Samplers by the names AUTOMATIC1111's web UI gives them, mapped to diffusers schedulers, without torch.

A ``Sampler`` names a diffusers scheduler class and the config values that make it that sampler
(``use_karras_sigmas``, ``algorithm_type``, ...); the engine builds one per call from the model's own
scheduler config with those values on top (``sdbot.inference.scheduling``), so the model's training
schedule (betas, prediction type, timestep spacing, flow shift) is kept and no call changes another's.

Two sets exist: the samplers of noise- and v-prediction models (SD 1.x, SD 2.x, SDXL) and those of
flow-matching models (SD 3.x, Flux). A model offers the set that fits its own scheduler
(``samplers_for``); a family diffusers knows but this table does not (a newer flow model with its own
scheduler) offers none but its own.

The PNG ``parameters`` carry a sampler as the web UI writes it since version 1.9: ``Sampler: DPM++ 2M,
Schedule type: Karras``; ``find_sampler`` reads that back, and the older ``Sampler: DPM++ 2M Karras`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KARRAS = "Karras"
NORMAL = "Normal"  # timesteps spaced evenly, diffusers' default
SIMPLE = "Simple"  # the flow models' own shifted schedule, as Forge names it


@dataclass(frozen=True)
class Sampler:
    """``name``: what members choose (the web UI's name, with the schedule where it has one: "DPM++ 2M
    Karras"). ``label`` and ``schedule_type``: the PNG's ``Sampler`` and ``Schedule type`` fields.
    ``scheduler``: the diffusers class; ``options``: config values set on top of the model's."""

    name: str
    scheduler: str
    schedule_type: str = NORMAL
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name.removesuffix(f" {KARRAS}"))


def _karras(name: str, scheduler: str, **options: Any) -> Sampler:
    return Sampler(f"{name} {KARRAS}", scheduler, KARRAS, {**options, "use_karras_sigmas": True}, name)


_PLAIN_SIGMAS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_DPM_2M = {**_PLAIN_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}
_DPM_2M_SDE = {**_DPM_2M, "algorithm_type": "sde-dpmsolver++"}

# For models that predict noise or v on a beta schedule: the UNet families.
DIFFUSION_SAMPLERS = (
    Sampler("Euler", "EulerDiscreteScheduler", options=_PLAIN_SIGMAS),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", options=_DPM_2M),
    _karras("DPM++ 2M", "DPMSolverMultistepScheduler", **_DPM_2M),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", options=_DPM_2M_SDE),
    _karras("DPM++ 2M SDE", "DPMSolverMultistepScheduler", **_DPM_2M_SDE),
    _karras("DPM++ SDE", "DPMSolverSDEScheduler"),
    Sampler("DDIM", "DDIMScheduler"),
    Sampler("UniPC", "UniPCMultistepScheduler", options=_PLAIN_SIGMAS),
    Sampler("LCM", "LCMScheduler"),
)
# For flow-matching models (SD 3.x, Flux): Euler on the model's shifted sigmas, deterministic or stochastic.
FLOW_SAMPLERS = (
    Sampler(
        "Euler", "FlowMatchEulerDiscreteScheduler", SIMPLE, {**_PLAIN_SIGMAS, "stochastic_sampling": False}
    ),
    Sampler(
        "Euler a", "FlowMatchEulerDiscreteScheduler", SIMPLE, {**_PLAIN_SIGMAS, "stochastic_sampling": True}
    ),
    _karras("Euler", "FlowMatchEulerDiscreteScheduler", stochastic_sampling=False),
)
ALL_SAMPLERS = DIFFUSION_SAMPLERS + FLOW_SAMPLERS
_FLOW_SCHEDULERS = frozenset({"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"})
_DIFFUSION_SCHEDULERS = frozenset(
    {sampler.scheduler for sampler in DIFFUSION_SAMPLERS}
    | {"PNDMScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler"}
    | {"KDPM2AncestralDiscreteScheduler", "DPMSolverSinglestepScheduler", "DEISMultistepScheduler"}
)
# The web UI's names of schedulers no sampler above builds, for the PNG of a model's own scheduler.
_OTHER_LABELS = {
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DPMSolverSinglestepScheduler": "DPM++ 2S",
    "DEISMultistepScheduler": "DEIS",
    "FlowMatchHeunDiscreteScheduler": "Heun",
}


def samplers_for(scheduler: str) -> tuple[Sampler, ...]:
    """The samplers a model whose own scheduler is the class ``scheduler`` can use."""
    if scheduler in _FLOW_SCHEDULERS:
        return FLOW_SAMPLERS
    if scheduler in _DIFFUSION_SCHEDULERS:
        return DIFFUSION_SAMPLERS
    return ()


def find_sampler(name: str, schedule_type: str = "", *, scheduler: str) -> Sampler | None:
    """The sampler of a model whose scheduler is ``scheduler`` that ``name`` (a choice, or a PNG's
    ``Sampler`` field with its ``Schedule type``) names; None when it names none of them."""
    offered = samplers_for(scheduler)
    wanted = name.strip().casefold()
    by_choice = {sampler.name.casefold(): sampler for sampler in offered}
    if schedule_type.strip().casefold() == KARRAS.casefold() and f"{wanted} karras" in by_choice:
        return by_choice[f"{wanted} karras"]
    return by_choice.get(wanted)


def describe_scheduler(scheduler: str, config: dict[str, Any]) -> tuple[str, str]:
    """The ``Sampler`` and ``Schedule type`` a PNG names for a scheduler that no ``Sampler`` built (a model's
    own): the sampler whose class and options match the config, else the web UI's name for the class."""
    same_class = [sampler for sampler in samplers_for(scheduler) if sampler.scheduler == scheduler]
    for sampler in same_class:
        if all(config.get(key, value) == value for key, value in sampler.options.items()):
            return sampler.label, sampler.schedule_type
    label = (
        same_class[0].label
        if same_class
        else _OTHER_LABELS.get(scheduler, scheduler.removesuffix("Scheduler"))
    )
    if config.get("use_karras_sigmas"):
        return label, KARRAS
    return label, SIMPLE if scheduler in _FLOW_SCHEDULERS else NORMAL
