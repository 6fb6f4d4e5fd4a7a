"""A1111 sampler/schedule names -> diffusers schedulers."""

from __future__ import annotations

import copy
import inspect
import logging

import diffusers
import pytest
import torch

from pictale.core import samplers
from pictale.core.samplers import (
    SAMPLER_NAMES,
    SAMPLERS_API,
    SCHEDULE_NAMES,
    SCHEDULERS_API,
    is_ancestral,
    is_stochastic,
    resolve_sampler,
    schedule_label,
    supported_schedules,
)
from pictale.engine import samplers as engine_samplers
from pictale.engine.samplers import make_scheduler

# scheduler_config.json as Stable Diffusion 1.5 ships it.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
    "trained_betas": None,
}

COMBOS = [(s, sch) for s in SAMPLER_NAMES for sch in ("automatic", *supported_schedules(s))]


# ----------------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    ("name", "scheduler", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "automatic")),  # karras is DPM++ 2M's own default
        ("Euler Karras", None, ("Euler", "karras")),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "automatic")),
        ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "karras")),
        ("DPM++ 2M SDE Heun", None, ("DPM++ 2M SDE Heun", "automatic")),
        ("Euler a SGM Uniform", None, ("Euler a", "sgm_uniform")),  # A1111 would strip only "Uniform"
        ("Euler SGMUniform", None, ("Euler", "sgm_uniform")),
        ("Heun karras", None, ("Heun", "karras")),
        ("Euler Karras", "Uniform", ("Euler", "karras")),  # the suffix wins, as in A1111
    ],
)
def test_combined_names_split(name, scheduler, expected):
    assert resolve_sampler(name, scheduler) == expected


@pytest.mark.parametrize("scheduler", ["Karras", "karras", "KARRAS"])
def test_schedule_by_label_or_name(scheduler):
    assert resolve_sampler("Euler", scheduler) == ("Euler", "karras")


def test_schedule_labels_and_aliases():
    assert resolve_sampler("Euler", "SGM Uniform") == ("Euler", "sgm_uniform")
    assert resolve_sampler("Euler", "SGMUniform") == ("Euler", "sgm_uniform")
    assert resolve_sampler("Euler", "Automatic") == ("Euler", "automatic")
    assert resolve_sampler("DPM++ 2M", "Exponential") == ("DPM++ 2M", "exponential")


def test_null_sampler_is_euler():
    assert resolve_sampler(None, None) == ("Euler", "automatic")
    assert resolve_sampler("", "") == ("Euler", "automatic")
    assert resolve_sampler("  ", "karras") == ("Euler", "karras")


def test_unknown_sampler_falls_back_to_dpmpp_2m(caplog):
    with caplog.at_level(logging.WARNING, logger=samplers.__name__):
        assert resolve_sampler("Nonexistent Sampler", None) == ("DPM++ 2M", "automatic")
    assert "Nonexistent Sampler" in caplog.text
    # No faithful diffusers equivalent: treated as unknown.
    assert resolve_sampler("DPM++ 2S a", "Karras") == ("DPM++ 2M", "automatic")
    assert resolve_sampler("DPM fast", "Exponential") == ("DPM++ 2M", "exponential")


def test_aliases_and_case_are_tolerated():
    assert resolve_sampler("k_euler_a", None) == ("Euler a", "automatic")
    assert resolve_sampler("euler a", None) == ("Euler a", "automatic")
    assert resolve_sampler("dpm++ 2m karras", None) == ("DPM++ 2M", "automatic")


def test_unknown_or_unsupported_schedule_is_automatic():
    assert resolve_sampler("Euler", "no such schedule") == ("Euler", "automatic")
    assert resolve_sampler("Euler", "Polyexponential") == ("Euler", "automatic")  # not reproducible
    assert resolve_sampler("Euler Align Your Steps", None) == ("Euler", "automatic")
    assert resolve_sampler("Euler a", "Karras") == ("Euler a", "automatic")  # no sigma flags there
    assert resolve_sampler("LCM", "Uniform") == ("LCM", "automatic")


def test_schedule_label():
    assert schedule_label("karras") == "Karras"
    assert schedule_label("sgm_uniform") == "SGM Uniform"
    assert schedule_label("automatic") == "Automatic"
    assert schedule_label(None) == "Automatic"
    assert schedule_label("Karras") == "Karras"


def test_ancestral_and_stochastic():
    assert is_ancestral("Euler a") and is_ancestral("DPM2 a")
    assert not is_ancestral("Euler")
    assert is_stochastic("DPM++ 2M SDE") and is_stochastic("Euler a")
    assert not is_stochastic("DPM++ 2M") and not is_stochastic("DDIM")


# ---------------------------------------------------------------------------------------- API lists


def test_samplers_api_shape():
    by_name = {s["name"]: s for s in SAMPLERS_API}
    assert SAMPLERS_API[0]["name"] == "DPM++ 2M"
    assert set(by_name) >= {
        "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DDIM", "Heun", "DPM2",
        "DPM2 a", "UniPC", "LCM", "PLMS", "DPM++ 2M SDE Heun", "DPM++ 3M SDE",
    }  # fmt: skip
    assert [s["name"] for s in SAMPLERS_API] == list(SAMPLER_NAMES)
    assert by_name["Euler a"] == {
        "name": "Euler a",
        "aliases": ["k_euler_a", "k_euler_ancestral"],
        "options": {"uses_ensd": True},
    }
    assert by_name["DPM++ 2M"]["options"] == {"scheduler": "karras"}
    assert by_name["Heun"]["options"] == {"second_order": True}
    assert by_name["DPM++ SDE"]["options"]["brownian_noise"] is True
    assert all(set(s) == {"name", "aliases", "options"} for s in SAMPLERS_API)


def test_schedulers_api_shape():
    by_name = {s["name"]: s for s in SCHEDULERS_API}
    assert SCHEDULERS_API[0]["name"] == "automatic"
    assert by_name["karras"] == {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    }
    assert by_name["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert by_name["uniform"]["default_rho"] == -1.0
    assert "polyexponential" not in by_name
    assert set(SCHEDULE_NAMES) >= {"automatic", "uniform", "karras", "exponential", "sgm_uniform"}


# ------------------------------------------------------------------------------------ construction


@pytest.mark.parametrize(("sampler", "schedule"), COMBOS)
def test_every_combo_builds_and_steps(sampler, schedule):
    sched = make_scheduler(SD15_SCHEDULER, sampler, schedule, seed=1)
    sched.set_timesteps(4)
    assert len(sched.timesteps) >= 4
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn((1, 4, 8, 8), generator=generator) * sched.init_noise_sigma
    accepts_generator = "generator" in inspect.signature(sched.step).parameters
    for t in sched.timesteps:
        model_input = sched.scale_model_input(sample, t)
        noise_pred = 0.1 * model_input
        kwargs = {"generator": generator} if accepts_generator else {}
        sample = sched.step(noise_pred, t, sample, **kwargs).prev_sample
    assert torch.isfinite(sample).all()


def test_new_object_and_base_config_unchanged():
    base = copy.deepcopy(SD15_SCHEDULER)
    a = make_scheduler(base, "DPM++ 2M", "karras")
    b = make_scheduler(base, "DPM++ 2M", "karras")
    assert a is not b
    assert base == SD15_SCHEDULER


def test_does_not_touch_an_existing_scheduler():
    existing = diffusers.PNDMScheduler.from_config(SD15_SCHEDULER)
    before = dict(existing.config)
    new = make_scheduler(existing.config, "Euler a", "automatic")
    assert isinstance(new, diffusers.EulerAncestralDiscreteScheduler)
    assert dict(existing.config) == before
    assert type(existing) is diffusers.PNDMScheduler


def test_dpmpp_2m_karras():
    sampler, schedule = resolve_sampler("DPM++ 2M Karras", None)
    s = make_scheduler(SD15_SCHEDULER, sampler, schedule)
    assert isinstance(s, diffusers.DPMSolverMultistepScheduler)
    assert s.config.use_karras_sigmas is True
    assert s.config.algorithm_type == "dpmsolver++"
    assert s.config.solver_order == 2
    assert make_scheduler(SD15_SCHEDULER, "DPM++ 2M", "karras").config.use_karras_sigmas is True


def test_dpmpp_2m_sde_and_variants():
    s = make_scheduler(SD15_SCHEDULER, "DPM++ 2M SDE", "automatic")
    assert isinstance(s, diffusers.DPMSolverMultistepScheduler)
    assert s.config.algorithm_type == "sde-dpmsolver++"
    assert s.config.use_exponential_sigmas is True  # A1111's default schedule for it
    heun = make_scheduler(SD15_SCHEDULER, "DPM++ 2M SDE Heun", "karras")
    assert heun.config.solver_type == "heun" and heun.config.use_karras_sigmas is True
    three = make_scheduler(SD15_SCHEDULER, "DPM++ 3M SDE", "automatic")
    assert three.config.solver_order == 3 and three.config.algorithm_type == "sde-dpmsolver++"


def test_euler_a():
    s = make_scheduler(SD15_SCHEDULER, "Euler a", "automatic")
    assert isinstance(s, diffusers.EulerAncestralDiscreteScheduler)
    assert s.config.beta_schedule == "scaled_linear"
    assert s.config.steps_offset == 1


def test_classes():
    expected = {
        "Euler": diffusers.EulerDiscreteScheduler,
        "Heun": diffusers.HeunDiscreteScheduler,
        "DPM2": diffusers.KDPM2DiscreteScheduler,
        "DPM2 a": diffusers.KDPM2AncestralDiscreteScheduler,
        "DDIM": diffusers.DDIMScheduler,
        "PLMS": diffusers.PNDMScheduler,
        "UniPC": diffusers.UniPCMultistepScheduler,
        "LCM": diffusers.LCMScheduler,
    }
    for name, cls in expected.items():
        assert type(make_scheduler(SD15_SCHEDULER, name, "automatic")) is cls, name
    assert make_scheduler(SD15_SCHEDULER, "PLMS", "automatic").config.skip_prk_steps is True
    assert (make_scheduler(SD15_SCHEDULER, "UniPC", "automatic").config.final_sigmas_type) == "sigma_min"
    unipc = make_scheduler(SD15_SCHEDULER, "UniPC", "automatic")
    assert (unipc.config.solver_type, unipc.config.solver_order) == ("bh1", 3)


def test_lms_needs_scipy():
    if samplers._has_module("scipy"):
        assert isinstance(make_scheduler(SD15_SCHEDULER, "LMS", "karras"), diffusers.LMSDiscreteScheduler)
        assert resolve_sampler("LMS", None) == ("LMS", "automatic")
    else:
        assert "LMS" not in SAMPLER_NAMES
        assert "LMS" not in {s["name"] for s in SAMPLERS_API}
        assert resolve_sampler("LMS", None) == ("DPM++ 2M", "automatic")


def test_dpmpp_sde_backend():
    s = make_scheduler(SD15_SCHEDULER, "DPM++ SDE", "automatic")
    if samplers._has_module("torchsde"):
        assert isinstance(s, diffusers.DPMSolverSDEScheduler)
        seeded = make_scheduler(SD15_SCHEDULER, "DPM++ SDE", "automatic", seed=5)
        assert seeded.config.noise_sampler_seed == 5  # Brownian noise follows the image seed
    else:
        assert isinstance(s, diffusers.DPMSolverSinglestepScheduler)
        assert s.config.algorithm_type == "sde-dpmsolver++"
    assert s.config.use_karras_sigmas is True


def test_schedule_flags():
    euler = make_scheduler(SD15_SCHEDULER, "Euler", "karras")
    assert euler.config.use_karras_sigmas is True and euler.config.timestep_spacing == "linspace"
    euler.set_timesteps(10)
    assert float(euler.sigmas[0]) == pytest.approx(14.6146, rel=1e-3)  # full range, as in A1111
    sgm = make_scheduler(SD15_SCHEDULER, "Euler", "sgm_uniform")
    assert sgm.config.timestep_spacing == "trailing" and sgm.config.use_karras_sigmas is False
    ddim = make_scheduler(SD15_SCHEDULER, "DDIM", "ddim")
    assert ddim.config.timestep_spacing == "leading" and ddim.config.steps_offset == 1
    uniform = make_scheduler(SD15_SCHEDULER, "DDIM", "uniform")
    assert uniform.config.timestep_spacing == "linspace"


def test_base_config_flags_do_not_leak():
    karras_base = {**SD15_SCHEDULER, "_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True}
    s = make_scheduler(karras_base, "DPM++ 2M", "exponential")
    assert s.config.use_karras_sigmas is False and s.config.use_exponential_sigmas is True
    u = make_scheduler(karras_base, "Euler", "uniform")
    assert u.config.use_karras_sigmas is False


def test_unsupported_schedule_falls_back_to_automatic(caplog):
    with caplog.at_level(logging.WARNING, logger=engine_samplers.__name__):
        s = make_scheduler(SD15_SCHEDULER, "Euler a", "karras")
    assert isinstance(s, diffusers.EulerAncestralDiscreteScheduler)
    assert "not available" in caplog.text
    lcm = make_scheduler(SD15_SCHEDULER, "LCM", "sgm_uniform")
    assert isinstance(lcm, diffusers.LCMScheduler)


def test_unknown_names_in_make_scheduler():
    assert isinstance(make_scheduler(SD15_SCHEDULER, "nope", "nope"), diffusers.DPMSolverMultistepScheduler)


def test_flow_match_config_is_kept():
    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    s = make_scheduler(flow, "DPM++ 2M", "karras")
    assert isinstance(s, diffusers.FlowMatchEulerDiscreteScheduler)
    assert s.config.shift == 3.0


def test_use_default_values_semantics_are_kept():
    # A config loaded without timestep_spacing lets the new class use its own default, as diffusers does.
    pndm = diffusers.PNDMScheduler.from_config(SD15_SCHEDULER)
    assert "timestep_spacing" in pndm.config.get("_use_default_values", [])
    euler = make_scheduler(pndm.config, "Euler", "automatic")
    assert euler.config.timestep_spacing == "linspace"


def test_supported_schedules_match_diffusers_flags():
    for name in SAMPLER_NAMES:
        cls = type(make_scheduler(SD15_SCHEDULER, name, "automatic"))
        params = inspect.signature(cls.__init__).parameters
        for schedule in supported_schedules(name):
            flag = {
                "karras": "use_karras_sigmas",
                "exponential": "use_exponential_sigmas",
                "beta": "use_beta_sigmas",
            }.get(schedule, "timestep_spacing")
            assert flag in params, (name, schedule)
