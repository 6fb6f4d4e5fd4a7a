"""A1111 sampler and schedule names -> diffusers schedulers, built fresh for every request.

Name handling follows A1111 1.10 (`sd_samplers.get_sampler_and_scheduler`, `sd_schedulers.schedulers`).
This module is pure (no torch): the name tables, `resolve_sampler` and the API lists. Building the
diffusers scheduler is `pictale.engine.samplers.make_scheduler`.

Samplers without a faithful diffusers equivalent are not offered: DPM++ 2S a (ancestral singlestep;
diffusers' singlestep solver is deterministic), DPM fast, DPM adaptive, Restart, DDIM CFG++; nor is LMS
without scipy (diffusers needs it there). Like any unknown name they fall back to DPM++ 2M. Schedules
offered are those a scheduler flag reproduces: uniform/normal (linspace timesteps), sgm_uniform/simple
(trailing), ddim (leading, offset 1), karras, exponential, beta (needs scipy).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

from pictale.core.errors import InvalidRequest

log = logging.getLogger(__name__)

DEFAULT_SAMPLER = "Euler"
"""Used when no sampler is named: the A1111 API default (`sampler_index`)."""
FALLBACK_SAMPLER = "DPM++ 2M"
"""Used for a sampler name that is not known: A1111's first sampler."""
AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Schedule:
    """One A1111 schedule type and the diffusers config that reproduces it (None = not reproducible)."""

    name: str
    label: str
    aliases: tuple[str, ...] | None = None
    default_rho: float = -1.0
    need_inner_model: bool = False
    spacing: str | None = None
    sigmas: str | None = None
    steps_offset: int | None = None

    @property
    def reproducible(self) -> bool:
        return self.name == AUTOMATIC or self.spacing is not None or self.sigmas is not None


# A1111 1.10's list, in its order. All names are recognised as suffixes of combined sampler names.
_ALL_SCHEDULES: tuple[Schedule, ...] = (
    Schedule(AUTOMATIC, "Automatic"),
    Schedule("uniform", "Uniform", need_inner_model=True, spacing="linspace"),
    Schedule("karras", "Karras", default_rho=7.0, sigmas="karras"),
    Schedule("exponential", "Exponential", sigmas="exponential"),
    Schedule("polyexponential", "Polyexponential", default_rho=1.0),
    Schedule("sgm_uniform", "SGM Uniform", ("SGMUniform",), need_inner_model=True, spacing="trailing"),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    # "simple" takes every (1000/n)-th training sigma from the top: trailing spacing up to rounding.
    Schedule("simple", "Simple", need_inner_model=True, spacing="trailing"),
    # "normal" spaces timesteps evenly from sigma_max to sigma_min, the same as "uniform".
    Schedule("normal", "Normal", need_inner_model=True, spacing="linspace"),
    Schedule("ddim", "DDIM", need_inner_model=True, spacing="leading", steps_offset=1),
    Schedule("beta", "Beta", need_inner_model=True, sigmas="beta"),
)

_SPACING = frozenset(s.name for s in _ALL_SCHEDULES if s.spacing)
_SIGMAS = frozenset(s.name for s in _ALL_SCHEDULES if s.sigmas)
_ALL = _SPACING | _SIGMAS


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler: its API entry and the diffusers class + config that implement it."""

    name: str
    aliases: tuple[str, ...]
    options: dict[str, Any]
    cls: str
    overrides: dict[str, Any] = field(default_factory=dict)
    schedules: frozenset[str] = _ALL
    stochastic: bool = False
    requires: str | None = None
    """A module diffusers needs for this scheduler class; without it the sampler is not offered."""

    @property
    def default_schedule(self) -> str:
        return str(self.options.get("scheduler", AUTOMATIC))


_DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}
_DPMPP_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}

# A1111 1.10 order (k-diffusion, then timestep samplers, then LCM), names, aliases and options.
_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), {"scheduler": "karras"}, "DPMSolverMultistepScheduler", _DPMPP),
    Sampler(
        "DPM++ SDE",
        ("k_dpmpp_sde",),
        {"scheduler": "karras", "second_order": True, "brownian_noise": True},
        "DPMSolverSDEScheduler",  # see _backend: singlestep SDE solver when torchsde is missing
        stochastic=True,
    ),
    Sampler(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde",),
        {"scheduler": "exponential", "brownian_noise": True},
        "DPMSolverMultistepScheduler",
        _DPMPP_SDE,
        stochastic=True,
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"},
        "DPMSolverMultistepScheduler",
        {**_DPMPP_SDE, "solver_type": "heun"},
        stochastic=True,
    ),
    Sampler(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True},
        "DPMSolverMultistepScheduler",
        {**_DPMPP_SDE, "solver_order": 3},
        stochastic=True,
    ),
    Sampler(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral"),
        {"uses_ensd": True},
        "EulerAncestralDiscreteScheduler",
        schedules=_SPACING,  # diffusers' ancestral Euler has no sigma-schedule flags
        stochastic=True,
    ),
    Sampler("Euler", ("k_euler",), {}, "EulerDiscreteScheduler"),
    Sampler("LMS", ("k_lms",), {}, "LMSDiscreteScheduler", requires="scipy"),
    Sampler("Heun", ("k_heun",), {"second_order": True}, "HeunDiscreteScheduler"),
    Sampler(
        "DPM2",
        ("k_dpm_2",),
        {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True},
        "KDPM2DiscreteScheduler",
    ),
    Sampler(
        "DPM2 a",
        ("k_dpm_2_a",),
        {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True},
        "KDPM2AncestralDiscreteScheduler",
        stochastic=True,
    ),
    Sampler("DDIM", ("ddim",), {}, "DDIMScheduler", schedules=_SPACING),
    Sampler("PLMS", ("plms",), {}, "PNDMScheduler", {"skip_prk_steps": True}, schedules=_SPACING),
    # A1111's UniPC settings (variant bh1, order 3, lower order final); like A1111 it stops at sigma_min,
    # and bh1 needs that: its last update divides by zero when the final sigma is 0.
    Sampler(
        "UniPC",
        ("unipc",),
        {},
        "UniPCMultistepScheduler",
        {
            "solver_type": "bh1",
            "solver_order": 3,
            "lower_order_final": True,
            "final_sigmas_type": "sigma_min",
        },
    ),
    # LCMScheduler picks its own timesteps from the distillation grid: no schedule applies.
    Sampler("LCM", ("k_lcm",), {}, "LCMScheduler", schedules=frozenset(), stochastic=True),
)


@functools.cache
def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


_AVAILABLE = tuple(s for s in _SAMPLERS if s.requires is None or _has_module(s.requires))
_BY_NAME = {s.name: s for s in _AVAILABLE}
_BY_LOWER = {
    **{a.lower(): s for s in _AVAILABLE for a in s.aliases},
    **{s.name.lower(): s for s in _AVAILABLE},
}
_SCHEDULE_BY_KEY = {key.lower(): s for s in _ALL_SCHEDULES for key in (s.name, s.label, *(s.aliases or ()))}

SAMPLER_NAMES: tuple[str, ...] = tuple(s.name for s in _AVAILABLE)
"""The samplers offered here (LMS needs scipy installed)."""


def _schedule_usable(schedule: Schedule) -> bool:
    # diffusers computes beta sigmas with scipy and refuses the flag without it.
    return schedule.reproducible and (schedule.sigmas != "beta" or _has_module("scipy"))


def _backend(sampler: Sampler) -> tuple[str, dict[str, Any], frozenset[str]]:
    """(diffusers class name, overrides, schedules) for a sampler in this environment."""
    if sampler.cls == "DPMSolverSDEScheduler" and not _has_module("torchsde"):
        # DPMSolverSDEScheduler (the k-diffusion port, Brownian noise) needs torchsde; without it the
        # second-order singlestep SDE solver is the closest: same order and stochasticity, Gaussian noise.
        return (
            "DPMSolverSinglestepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
            _SIGMAS,
        )
    return sampler.cls, sampler.overrides, sampler.schedules


def _find_sampler(name: str) -> Sampler | None:
    # A1111 matches exact names only; case-insensitive names and aliases (k_euler_a) are a pictale courtesy.
    return _BY_NAME.get(name) or _BY_LOWER.get(name.lower())


def _find_schedule(name: str | None) -> Schedule | None:
    return _SCHEDULE_BY_KEY.get(name.strip().lower()) if name else None


def supported_schedules(sampler: str) -> tuple[str, ...]:
    """Schedule names (besides automatic) this sampler honours here, in A1111's order."""
    found = _find_sampler(sampler)
    if found is None:
        return ()
    allowed = _backend(found)[2]
    return tuple(s.name for s in _ALL_SCHEDULES if s.name in allowed and _schedule_usable(s))


def default_schedule(sampler: str) -> str:
    """The schedule A1111 uses for this sampler when the schedule is Automatic."""
    found = _find_sampler(sampler)
    return found.default_schedule if found else AUTOMATIC


def is_ancestral(sampler: str) -> bool:
    """True for the ancestral samplers ("Euler a", "DPM2 a"), which add fresh noise every step."""
    return sampler in ("Euler a", "DPM2 a")


def is_stochastic(sampler: str) -> bool:
    """True when the sampler draws noise during sampling (ancestral, SDE, LCM): results need the generator."""
    found = _find_sampler(sampler)
    return bool(found and found.stochastic)


def resolve_sampler(sampler_name: str | None, scheduler: str | None) -> tuple[str, str]:
    """A1111 1.9+ resolution: split "DPM++ 2M Karras", fall back, reset the sampler's own default schedule.

    Returns the canonical sampler name and a schedule name ("automatic", "karras", ...). A schedule that is
    unknown, or that this sampler cannot follow here, becomes "automatic", so infotexts state what ran.
    """
    name = (sampler_name or "").strip() or DEFAULT_SAMPLER
    schedule = _find_schedule(scheduler)
    if scheduler and scheduler.strip() and schedule is None:
        log.warning("unknown schedule type %r, using Automatic", scheduler)

    # Like A1111, any schedule name, label or alias may end the sampler name after a space. The longest
    # match wins (A1111 takes the first, which reads "Euler SGM Uniform" as sampler "Euler SGM").
    lowered = name.lower()
    suffix: tuple[Schedule, str] | None = None
    for candidate in _ALL_SCHEDULES:
        for option in (candidate.label, candidate.name, *(candidate.aliases or ())):
            if lowered.endswith(" " + option.lower()) and (suffix is None or len(option) > len(suffix[1])):
                suffix = (candidate, option)
    if suffix is not None:
        schedule = suffix[0]
        name = name[: -(len(suffix[1]) + 1)]

    sampler = _find_sampler(name)
    if sampler is None:
        log.warning("unknown sampler %r, using %s", sampler_name, FALLBACK_SAMPLER)
        sampler = _BY_NAME[FALLBACK_SAMPLER]

    if schedule is None or schedule.name == sampler.default_schedule:
        return sampler.name, AUTOMATIC
    if schedule.name != AUTOMATIC and schedule.name not in supported_schedules(sampler.name):
        log.warning("schedule %s is not available for %s, using Automatic", schedule.label, sampler.name)
        return sampler.name, AUTOMATIC
    return sampler.name, schedule.name


def schedule_label(schedule: str | None) -> str:
    """The label A1111 writes as "Schedule type" ("Karras", "SGM Uniform", "Automatic")."""
    if not schedule:
        return "Automatic"
    found = _find_schedule(schedule)
    return found.label if found else schedule


SAMPLERS_API: list[dict[str, Any]] = [
    {"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in _AVAILABLE
]
"""`GET /sdapi/v1/samplers`: the samplers pictale offers, in A1111's shape and order."""

SCHEDULERS_API: list[dict[str, Any]] = [
    {
        "name": s.name,
        "label": s.label,
        "aliases": list(s.aliases) if s.aliases else None,
        "default_rho": s.default_rho,
        "need_inner_model": s.need_inner_model,
    }
    for s in _ALL_SCHEDULES
    if _schedule_usable(s)
]
"""`GET /sdapi/v1/schedulers`: the schedule types pictale reproduces, in A1111's shape and order."""

SCHEDULE_NAMES: tuple[str, ...] = tuple(str(s["name"]) for s in SCHEDULERS_API)


_SAMPLER_KEYS = {k.lower() for s in SAMPLERS_API for k in (s["name"], *s["aliases"])}
_SCHEDULE_KEYS = {k.lower() for s in SCHEDULERS_API for k in (s["name"], s["label"], *(s["aliases"] or ()))}


def schedule_suffix(name: str) -> str | None:
    """The schedule that ends a combined sampler name ("DPM++ 2M Karras" -> "karras"), if any."""
    lowered = " ".join(name.lower().split())
    if lowered in _SAMPLER_KEYS:
        return None
    for option in sorted(_SCHEDULE_KEYS, key=len, reverse=True):
        if lowered.endswith(" " + option) and lowered[: -len(option) - 1] in _SAMPLER_KEYS:
            return option
    return None


def check_sampler_name(name: str | None, param: str) -> None:
    """A known A1111 sampler name (optionally ending in a schedule), else a 4xx naming `param` and the choices."""
    if name and " ".join(name.lower().split()) not in _SAMPLER_KEYS and not schedule_suffix(name):
        raise InvalidRequest(
            f"{param}: unknown sampler {name!r}; use one of {[s['name'] for s in SAMPLERS_API]}, "
            "optionally followed by a schedule type (e.g. 'DPM++ 2M Karras')",
            param=param,
        )


def check_schedule_name(name: str | None, param: str) -> None:
    if name and name.strip().lower() not in _SCHEDULE_KEYS:
        raise InvalidRequest(
            f"{param}: unknown schedule type {name!r}; use one of {[s['name'] for s in SCHEDULERS_API]}",
            param=param,
        )


STEPPED_SAMPLERS: frozenset[str] = frozenset({"Euler", "Euler a", "DPM++ 2M"})
"""Samplers whose requests join and leave a running batch between steps (engine.stepping): one model evaluation per
step, all their state in their own scheduler instance. Other samplers merge whole runs (service.batching)."""
