"""A1111 sampler names -> flow-matching schedulers for the T5 family (SD3), with the name of what really runs.

SD3 is a flow-matching model: the A1111 samplers exist only where diffusers has a flow version of them.

- "Euler" -> FlowMatchEulerDiscreteScheduler from the model's own config (SD3's native sampler);
- "Heun" -> FlowMatchHeunDiscreteScheduler (two model evaluations per step);
- "DPM++ 2M", "UniPC" -> DPMSolverMultistepScheduler / UniPCMultistepScheduler with flow sigmas and the
  model's shift (txt2img only: they have no `scale_noise`, which SD3's img2img and inpaint need);
- anything else ("Euler a", "DDIM", unknown names) -> Euler. Ancestral flow sampling is not offered: SD3's
  pipeline draws its noise without the job's generator, so the same seed would not give the same image.

A name is never refused (clients send "Euler a" by default); the returned label goes into the infotext.

What the pipeline hands `set_timesteps` matters too (`pipeline_args`): SD3's passes `mu` only for dynamically
shifted models; Flux's always passes `sigmas` and `mu`. A class that takes no `sigmas` (Heun), or a
multistep solver given `mu` for a model without dynamic shifting (DPM++ 2M on FLUX.1 schnell), runs Euler instead.
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers

from pictale.core.samplers import _find_sampler
from pictale.core.types import Mode

NATIVE = "Euler"
FLUX_PIPELINE_ARGS = frozenset({"sigmas", "mu"})
"""What diffusers' Flux pipelines always pass to `scheduler.set_timesteps`."""
_FLOW_SIGMAS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
_BY_LABEL: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "Heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {**_FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}),
    "UniPC": ("UniPCMultistepScheduler", _FLOW_SIGMAS),
}


_MU_NEEDS_DYNAMIC_SHIFTING = frozenset({"DPM++ 2M"})
"""DPMSolverMultistepScheduler.set_timesteps asserts `use_dynamic_shifting` whenever it is given `mu`."""


def requested_name(sampler: str | None) -> str:
    """The A1111 name a client asked for, spelled canonically ("euler a" -> "Euler a")."""
    found = _find_sampler(sampler or "")
    return found.name if found is not None else (sampler or NATIVE)


def flow_label(
    sampler: str | None, mode: Mode, base_config: dict[str, Any], pipeline_args: frozenset[str] = frozenset()
) -> str:
    """The flow sampler that runs for the requested A1111 name in `mode` (one of `_BY_LABEL`)."""
    found = _find_sampler(sampler or "")
    label = found.name if found is not None and found.name in _BY_LABEL else NATIVE
    cls = getattr(diffusers, _BY_LABEL[label][0])
    if mode is not Mode.TXT2IMG and not hasattr(cls, "scale_noise"):
        return NATIVE  # img2img/inpaint noise the init latents with `scheduler.scale_noise`
    timesteps_args = set(inspect.signature(cls.set_timesteps).parameters)
    if base_config.get("use_dynamic_shifting") and "mu" not in timesteps_args:
        return NATIVE  # the pipeline passes `mu` to schedulers of dynamically shifted models
    flow_sigmas = _BY_LABEL[label][1].get("use_flow_sigmas", False)
    if "sigmas" in pipeline_args and not flow_sigmas and "sigmas" not in timesteps_args:
        return NATIVE  # Flux hands a scheduler without flow sigmas its own sigmas (Heun takes none)
    if "mu" in pipeline_args and label in _MU_NEEDS_DYNAMIC_SHIFTING and not base_config.get("use_dynamic_shifting"):
        return NATIVE  # DPM++ given `mu` asserts dynamic shifting, which FLUX.1 schnell does not use
    return label


def make_flow_scheduler(
    base_config: dict[str, Any], sampler: str | None, mode: Mode, pipeline_args: frozenset[str] = frozenset()
) -> tuple[Any, str]:
    """A NEW scheduler for (sampler, mode) built from the model's flow-matching config, and its label."""
    label = flow_label(sampler, mode, base_config, pipeline_args)
    cls_name, overrides = _BY_LABEL[label]
    cls = getattr(diffusers, cls_name)
    if label == NATIVE and str(base_config.get("_class_name", "")) == cls_name:
        return cls.from_config(base_config), label
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    overrides = dict(overrides)
    if "flow_shift" in accepted:
        overrides["flow_shift"] = float(base_config.get("shift", 1.0))
    # Keys of the flow config the other class does not take would only produce "unexpected config" warnings.
    config = {k: v for k, v in base_config.items() if k.startswith("_") or k in accepted}
    return cls.from_config(config, **{k: v for k, v in overrides.items() if k in accepted}), label
