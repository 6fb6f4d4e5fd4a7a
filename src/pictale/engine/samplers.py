"""A1111 sampler/schedule names -> new diffusers scheduler instances (name tables: core.samplers)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import diffusers

from pictale.core.samplers import (
    _BY_NAME,
    _SCHEDULE_BY_KEY,
    AUTOMATIC,
    FALLBACK_SAMPLER,
    Schedule,
    _backend,
    _find_sampler,
    _find_schedule,
    supported_schedules,
)

log = logging.getLogger(__name__)


def _schedule_overrides(schedule: Schedule) -> dict[str, Any]:
    """Scheduler config for a schedule; every sigma flag is set so the base config's flags cannot leak."""
    if schedule.name == AUTOMATIC:
        return {}
    flags = {
        "use_karras_sigmas": schedule.sigmas == "karras",
        "use_exponential_sigmas": schedule.sigmas == "exponential",
        "use_beta_sigmas": schedule.sigmas == "beta",
        "use_lu_lambdas": False,
    }
    if schedule.sigmas:
        # Linspace timesteps make the sigma range the model's full [sigma_min, sigma_max], as in A1111;
        # otherwise "leading" spacing (SD 1.5's config) would start Euler-type schedulers below sigma_max.
        return {**flags, "timestep_spacing": "linspace"}
    overrides = {**flags, "timestep_spacing": schedule.spacing}
    if schedule.steps_offset is not None:
        overrides["steps_offset"] = schedule.steps_offset
    return overrides


def make_scheduler(base_config: dict[str, Any], sampler: str, schedule: str | None, *, seed: int | None = None) -> Any:
    """A NEW diffusers scheduler for (sampler, schedule) from the model's scheduler config; never mutates it.

    "automatic" means the sampler's A1111 default schedule (DPM++ 2M -> Karras) or else the model's own
    configured timesteps. A schedule the sampler cannot follow falls back to automatic. `seed` seeds the
    Brownian noise of DPMSolverSDEScheduler (other schedulers draw noise from the pipeline's generator).
    """
    config = dict(base_config)
    class_name = str(config.get("_class_name", ""))
    if class_name.startswith("FlowMatch") and hasattr(diffusers, class_name):
        # Flow-matching models (SD3, Flux) have one native sampler; the A1111 names do not apply.
        return getattr(diffusers, class_name).from_config(config)

    found = _find_sampler(sampler)
    if found is None:
        log.warning("unknown sampler %r, using %s", sampler, FALLBACK_SAMPLER)
        found = _BY_NAME[FALLBACK_SAMPLER]
    cls_name, sampler_overrides, _ = _backend(found)
    usable = set(supported_schedules(found.name))

    chosen = _find_schedule(schedule) or _SCHEDULE_BY_KEY[AUTOMATIC]
    if chosen.name != AUTOMATIC and chosen.name not in usable:
        log.warning("schedule %s is not available for %s, using Automatic", chosen.label, found.name)
        chosen = _SCHEDULE_BY_KEY[AUTOMATIC]
    if chosen.name == AUTOMATIC and found.default_schedule in usable:
        chosen = _SCHEDULE_BY_KEY[found.default_schedule]

    cls = getattr(diffusers, cls_name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    overrides = {**sampler_overrides, **_schedule_overrides(chosen)}
    if seed is not None:
        overrides["noise_sampler_seed"] = seed
    overrides = {k: v for k, v in overrides.items() if k in accepted}
    # Keys of other scheduler classes would only produce "unexpected config" warnings; private keys
    # (`_use_default_values`, `_class_name`) stay, so diffusers still knows which values were defaults.
    config = {k: v for k, v in config.items() if k.startswith("_") or k in accepted}
    return cls.from_config(config, **overrides)
