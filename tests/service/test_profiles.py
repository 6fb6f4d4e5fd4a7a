"""Few-step model profiles: detection from names and folder files, declared kinds, sidecars, apply_profile."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from pictale.core.config import Settings
from pictale.core.types import ModelEntry
from pictale.service.profiles import (
    apply_profile,
    declared_kind,
    default_profile,
    default_size,
    model_profile,
    profile_for,
)


def entry(name: str, filename: str | None = None, *, source: str = "single_file", family="sdxl") -> ModelEntry:
    filename = filename or f"/nowhere/{name}.safetensors"
    return ModelEntry(f"{name} [0123456789]", name, filename, source, family, "0123456789" * 6)


@pytest.mark.parametrize(
    ("name", "kind", "sampler", "scheduler", "steps", "cfg"),
    [
        ("sdxl_lightning_4step", "lightning", "Euler", "sgm_uniform", 4, 1.0),
        ("sdxl_lightning_8step_unet", "lightning", "Euler", "sgm_uniform", 8, 1.0),
        ("juggernautXL_v9Lightning", "lightning", "Euler", "sgm_uniform", 4, 1.0),
        ("sd_xl_turbo_1.0_fp16", "turbo", "Euler a", "sgm_uniform", 1, 1.0),
        ("LCM_Dreamshaper_v7", "lcm", "LCM", "automatic", 4, 1.5),
        ("dreamshaper-8-lcm", "lcm", "LCM", "automatic", 4, 1.5),
        ("Hyper-SDXL-8steps-lora-merged", "hyper", "DDIM", "sgm_uniform", 8, 1.0),
        ("Hyper-SD15-12steps-CFG", "hyper", "DDIM", "sgm_uniform", 12, 5.0),
        ("hypersd_sdxl", "hyper", "DDIM", "sgm_uniform", 8, 1.0),
        ("my-distilled-2step", "lightning", "Euler", "sgm_uniform", 2, 1.0),
        ("HyperRealism_v3", "standard", "DPM++ 2M", "automatic", 20, 7.0),
        ("v1-5-pruned-emaonly", "standard", "DPM++ 2M", "automatic", 20, 7.0),
        ("sd_xl_base_1.0", "standard", "DPM++ 2M", "automatic", 20, 7.0),
    ],
)
def test_detection_from_names(name, kind, sampler, scheduler, steps, cfg):
    p = model_profile(entry(name))
    assert (p.kind, p.sampler, p.scheduler, p.steps, p.cfg_scale) == (kind, sampler, scheduler, steps, cfg)
    assert p.source == ("default" if kind == "standard" else "name")
    assert p.few_step is (kind != "standard")


def test_hub_ids_and_turbo_size():
    p = model_profile(ModelEntry("stabilityai/sdxl-turbo", "stabilityai/sdxl-turbo", "stabilityai/sdxl-turbo", "hub"))
    assert p.kind == "turbo" and p.size == 512
    assert default_size(p, "sdxl") == 512
    assert default_size(default_profile(), "sdxl") == 1024 and default_size(default_profile(), "sd15") == 512
    assert model_profile(entry("x", "ByteDance/SDXL-Lightning", source="hub")).kind == "lightning"


def test_parent_folders_do_not_count(tmp_path):
    """A temp or home folder name says nothing about the model: only its own name is read."""
    p = model_profile(entry("plain", "/home/turbo-lcm-4steps/models/plain.safetensors"))
    assert p.kind == "standard"


def _tiny_copy(tiny_models, tmp_path: Path, name: str = "tiny-copy") -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_models["sd15"], folder)
    return folder


def _folder_entry(folder: Path) -> ModelEntry:
    return ModelEntry(folder.name, folder.name, str(folder), "folder", "sd15", "ab" * 32)


def test_lcm_scheduler_in_a_diffusers_folder(tiny_models, tmp_path):
    folder = _tiny_copy(tiny_models, tmp_path)
    assert model_profile(_folder_entry(folder)).kind == "standard"
    config = folder / "scheduler" / "scheduler_config.json"
    data = json.loads(config.read_text())
    data["_class_name"] = "LCMScheduler"
    config.write_text(json.dumps(data))
    p = model_profile(_folder_entry(folder))
    assert (p.kind, p.source, p.sampler, p.steps, p.cfg_scale) == ("lcm", "files", "LCM", 4, 1.5)


def test_lcm_distilled_unet_embeds_guidance(tiny_models, tmp_path):
    """time_cond_proj_dim: guidance is an embedding, the model cards use guidance_scale 8."""
    folder = _tiny_copy(tiny_models, tmp_path)
    config = folder / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["time_cond_proj_dim"] = 256
    config.write_text(json.dumps(data))
    p = model_profile(_folder_entry(folder))
    assert (p.kind, p.source, p.cfg_scale) == ("lcm", "files", 8.0)


def test_declared_kind_wins(tiny_models, tmp_path):
    e = entry("sdxl_lightning_4step")
    p = model_profile(e, "turbo")
    assert (p.kind, p.source, p.steps) == ("turbo", "declared", 1)
    assert model_profile(e, "standard").kind == "standard"
    assert model_profile(entry("plain"), "Hyper-SD").kind == "hyper"


def test_unknown_declared_kind_is_standard_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert model_profile(entry("plain"), "warp").kind == "standard"
    assert "unknown model kind 'warp'" in caplog.text


def test_settings_model_kind_declares_the_start_up_model_only(tmp_path):
    e = entry("plain", "/models/plain.safetensors")
    other = entry("other", "/models/other.safetensors")
    assert declared_kind(Settings(data_dir=tmp_path), e) is None
    s = Settings(data_dir=tmp_path, model="/models/plain.safetensors", model_kind="lightning")
    assert declared_kind(s, e) == "lightning" and declared_kind(s, other) is None
    assert profile_for(s, e).kind == "lightning" and profile_for(s, other).kind == "standard"
    by_name = Settings(data_dir=tmp_path, model="plain", model_kind="lcm")
    assert declared_kind(by_name, e) == "lcm"
    # no model named: the kind applies to whatever is served
    assert declared_kind(Settings(data_dir=tmp_path, model_kind="turbo"), other) == "turbo"


def test_sidecar_beside_a_file_and_a_folder(tiny_models, tmp_path):
    single = tmp_path / "mymodel.safetensors"
    single.write_bytes(b"")
    (tmp_path / "mymodel.pictale.json").write_text(json.dumps({"kind": "lightning", "steps": 2}))
    p = model_profile(ModelEntry("mymodel", "mymodel", str(single), "single_file", "sdxl"))
    assert (p.kind, p.source, p.steps, p.sampler) == ("lightning", "sidecar", 2, "Euler")

    folder = _tiny_copy(tiny_models, tmp_path, "fast.v2")
    (tmp_path / "fast.v2.pictale.json").write_text(
        json.dumps({"kind": "hyper", "sampler": "Euler a", "cfg_scale": 2, "size": 768})
    )
    p = model_profile(_folder_entry(folder))
    assert (p.kind, p.sampler, p.steps, p.cfg_scale, p.size) == ("hyper", "Euler a", 8, 2.0, 768)


def test_sidecar_standard_stops_name_detection_and_bad_sidecars_are_ignored(tmp_path, caplog):
    f = tmp_path / "dreamshaperXL_turbo.safetensors"
    f.write_bytes(b"")
    sidecar = tmp_path / "dreamshaperXL_turbo.pictale.json"
    sidecar.write_text(json.dumps({"kind": "standard", "steps": 6, "cfg_scale": 2, "sampler": "DPM++ SDE Karras"}))
    e = ModelEntry(f.stem, f.stem, str(f), "single_file", "sdxl")
    p = model_profile(e)
    assert (p.kind, p.source, p.steps, p.cfg_scale, p.sampler) == ("standard", "sidecar", 6, 2.0, "DPM++ SDE Karras")
    sidecar.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert model_profile(e).kind == "turbo"  # back to the name
    assert "ignoring" in caplog.text


def test_apply_profile_fills_only_what_the_client_left_unset():
    turbo = model_profile(entry("sdxl-turbo"))
    fields = {"prompt": "x", "steps": 30, "width": 1024, "height": 1024, "sampler": "Euler", "cfg_scale": 7.0}
    out = apply_profile(fields, turbo, {"steps", "sampler"})
    assert out["steps"] == 30 and out["sampler"] == "Euler"
    assert out["cfg_scale"] == 1.0 and out["scheduler"] == "sgm_uniform"
    assert out["width"] == out["height"] == 512 and out["prompt"] == "x"
    assert fields["cfg_scale"] == 7.0  # a new dict
    standard = apply_profile({"width": 1024}, default_profile(), set())
    assert standard == {"width": 1024, "sampler": "DPM++ 2M", "scheduler": "automatic", "steps": 20, "cfg_scale": 7.0}
    assert model_profile(entry("sdxl_lightning_4step")).to_json()["few_step"] is True


def test_sd3_defaults_to_its_own_sampler_steps_and_size():
    p = model_profile(entry("sd3-medium", source="folder", family="sd3"))
    assert (p.kind, p.sampler, p.steps, p.cfg_scale) == ("standard", "Euler", 28, 7.0)
    assert default_size(p, "sd3") == 1024
    turbo = model_profile(entry("sd3.5-large-turbo", source="folder", family="sd3"))
    assert turbo.kind == "turbo" and turbo.steps == 1  # a few-step kind keeps its own defaults
