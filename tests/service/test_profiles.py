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


# -- FLUX.1 --------------------------------------------------------------------------------------------------------
FLUX_DEV = {
    "kind": "standard",
    "few_step": False,
    "sampler": "Euler",
    "scheduler": "automatic",
    "steps": 28,
    "cfg_scale": 1.0,
    "size": None,
    "source": "files",
    "variant": "dev",
    "distilled_cfg_scale": 3.5,
    "t5_tokens": 512,
}


@pytest.fixture(scope="module")
def flux_folders(tmp_path_factory):
    from pictale.engine.tiny.flux import write_tiny_flux

    root = tmp_path_factory.mktemp("tiny-flux")
    return {variant: write_tiny_flux(root, variant)[0] for variant in ("schnell", "dev", "kontext")}


def flux_entry(path: Path, source: str = "folder") -> ModelEntry:
    return ModelEntry(f"{path.name} [0123456789]", path.stem, str(path), source, "flux", "0123456789" * 6)


def safetensors_file(path: Path, keys: list[str]) -> Path:
    """A single file whose header names `keys` (the variant is told from tensor names only)."""
    header = json.dumps({k: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for k in keys}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return path


def test_flux_variants_get_their_defaults(flux_folders):
    assert model_profile(flux_entry(flux_folders["dev"])).to_json() == FLUX_DEV
    schnell = model_profile(flux_entry(flux_folders["schnell"])).to_json()
    assert schnell == {**FLUX_DEV, "few_step": True, "steps": 4, "variant": "schnell", "distilled_cfg_scale": None,
                       "t5_tokens": 256}  # fmt: skip
    kontext = model_profile(flux_entry(flux_folders["kontext"])).to_json()
    assert kontext == {**FLUX_DEV, "variant": "kontext", "distilled_cfg_scale": 2.5}
    dev = model_profile(flux_entry(flux_folders["dev"]))
    assert dev.own_defaults and not dev.few_step and default_size(dev, "flux") == default_size(dev, None) == 1024


def test_flux_single_files_by_tensor_names_sidecar_and_name(tmp_path):
    guided = ["double_blocks.0.img_attn.qkv.weight", "guidance_in.in_layer.weight"]
    dev = safetensors_file(tmp_path / "flux1-custom.safetensors", guided)
    schnell = safetensors_file(tmp_path / "flux1-fast.safetensors", guided[:1])
    kontext = safetensors_file(tmp_path / "flux1-kontext-dev.safetensors", guided)
    relabelled = safetensors_file(tmp_path / "mine.safetensors", guided)
    (tmp_path / "mine.pictale.json").write_text(json.dumps({"variant": "kontext"}))
    gguf_schnell, gguf = tmp_path / "flux1-schnell-Q4_K_S.gguf", tmp_path / "mystery.gguf"
    gguf_schnell.write_bytes(b"GGUF"), gguf.write_bytes(b"GGUF")
    found = {p.name: model_profile(flux_entry(p, "single_file")).variant for p in (dev, schnell, kontext, relabelled)}
    found |= {p.name: model_profile(flux_entry(p, "single_file")).variant for p in (gguf_schnell, gguf)}
    assert found == {
        "flux1-custom.safetensors": "dev",
        "flux1-fast.safetensors": "schnell",
        "flux1-kontext-dev.safetensors": "kontext",
        "mine.safetensors": "kontext",
        "flux1-schnell-Q4_K_S.gguf": "schnell",
        "mystery.gguf": "dev",  # nothing says: dev's defaults (more steps, guidance) are the safe ones
    }
    p = model_profile(flux_entry(relabelled, "single_file"))
    assert (p.source, p.distilled_cfg_scale) == ("sidecar", 2.5)


def test_flux_sidecar_and_name_override_the_variant_defaults(tmp_path, flux_folders):
    folder = tmp_path / "flux-dev-hyper-8steps"
    shutil.copytree(flux_folders["dev"], folder)
    p = model_profile(flux_entry(folder))
    assert (p.variant, p.steps, p.sampler, p.kind) == ("dev", 8, "Euler", "standard")  # no DDIM for a flow model
    (tmp_path / "flux-dev-hyper-8steps.pictale.json").write_text(
        json.dumps({"distilled_cfg_scale": 4, "t5_tokens": 300, "steps": 12, "cfg_scale": 2})
    )
    p = model_profile(flux_entry(folder))
    assert (p.steps, p.cfg_scale, p.distilled_cfg_scale, p.t5_tokens) == (12, 2.0, 4.0, 300)
    assert model_profile(entry("sd-with-sidecar", str(folder), family="sdxl")).distilled_cfg_scale is None


def test_flux_t5_tokens_follow_an_explicit_t5_max_tokens(tmp_path, flux_folders):
    dev, schnell = flux_entry(flux_folders["dev"]), flux_entry(flux_folders["schnell"])
    default = Settings(data_dir=tmp_path)
    assert (profile_for(default, dev).t5_tokens, profile_for(default, schnell).t5_tokens) == (512, 256)
    assert profile_for(default, entry("sd3-medium", family="sd3")).t5_tokens is None  # SD3: the engine's setting
    explicit = Settings(data_dir=tmp_path, t5_max_tokens=400)
    assert (profile_for(explicit, dev).t5_tokens, profile_for(explicit, schnell).t5_tokens) == (400, 256)
    short = Settings(data_dir=tmp_path, t5_max_tokens=128)
    assert (profile_for(short, dev).t5_tokens, profile_for(short, schnell).t5_tokens) == (128, 128)


def test_apply_profile_fills_distilled_guidance_unless_sent(flux_folders):
    dev = model_profile(flux_entry(flux_folders["dev"]))
    fields = {"sampler": "DPM++ 2M", "steps": 50, "cfg_scale": 7.0, "distilled_cfg_scale": None}
    assert apply_profile(fields, dev, set()) == {"sampler": "Euler", "scheduler": "automatic", "steps": 28,
                                                 "cfg_scale": 1.0, "distilled_cfg_scale": 3.5}  # fmt: skip
    sent = apply_profile({**fields, "distilled_cfg_scale": 5.0}, dev, {"distilled_cfg_scale", "cfg_scale"})
    assert (sent["distilled_cfg_scale"], sent["cfg_scale"], sent["steps"]) == (5.0, 7.0, 28)
    schnell = model_profile(flux_entry(flux_folders["schnell"]))
    assert "distilled_cfg_scale" not in apply_profile({}, schnell, set())


def test_hub_flux_model_learns_its_variant_from_the_loaded_engine(tmp_path):
    from types import SimpleNamespace

    from pictale.service.profiles import service_profile

    hub = ModelEntry("someone/flux-finetune", "someone/flux-finetune", "someone/flux-finetune", "hub")
    engine = SimpleNamespace(family="flux", flux_variant="kontext", entry=hub)
    loaded = SimpleNamespace(settings=Settings(data_dir=tmp_path), current_model=hub, engine=engine)
    p = service_profile(loaded, hub)
    assert (p.variant, p.distilled_cfg_scale, p.source, default_size(p, None)) == ("kontext", 2.5, "name", 1024)
    assert service_profile(SimpleNamespace(settings=loaded.settings, current_model=None), hub).variant is None


def test_flux_jobs_floor_sizes_to_16_and_carry_their_t5_length():
    from pictale.core.types import GenerationSpec, HiresSpec
    from pictale.service.flux import fit_flux_job

    spec = GenerationSpec(width=1000, height=72, distilled_cfg_scale=4.0, hires=HiresSpec(resize_x=1400))
    dev = fit_flux_job(spec, "dev", 512)
    assert (dev.width, dev.height, dev.hires.resize_x, dev.hires.resize_y) == (992, 64, 1392, 0)
    assert (dev.distilled_cfg_scale, dev.t5_tokens) == (4.0, 512)
    schnell = fit_flux_job(spec, "schnell", 256)
    assert (schnell.distilled_cfg_scale, schnell.t5_tokens) == (None, 256)  # no guidance embedding to feed
    assert fit_flux_job(spec, None, None) is spec
