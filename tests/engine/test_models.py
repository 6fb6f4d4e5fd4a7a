import hashlib
import json
import logging
import os
import shutil
import struct

import pytest
import safetensors
import torch
from transformers import CLIPTokenizer

from pictale.core.errors import ModelLoadError, ModelNotFound, UnsafeModelFile
from pictale.engine import hashes
from pictale.engine.configs import packaged_config_dir
from pictale.engine.models import (
    detect_family,
    load_pipeline,
    resolve_model,
    scan_checkpoints,
    single_file_config_dir,
)

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models_dir(tiny_models, tmp_path):
    """An A1111-like models dir: Stable-diffusion/ with a single file, its config dir, folders and a .ckpt."""
    ckpt = tmp_path / "Stable-diffusion"
    (ckpt / "sub").mkdir(parents=True)
    shutil.copy(tiny_models["sd15_single"], ckpt / "tiny-sd15.safetensors")
    shutil.copytree(tiny_models["sd15_config"], ckpt / "tiny-sd15.config")
    shutil.copy(tiny_models["sdxl_single"], ckpt / "sub" / "xl.safetensors")
    shutil.copytree(tiny_models["sd15"], ckpt / "my-folder")
    shutil.copytree(tiny_models["sdxl"], ckpt / "sub" / "xl-folder")
    (ckpt / "old.ckpt").write_bytes(b"not really a pickle")
    (ckpt / "sub" / "loop").symlink_to(ckpt)  # symlinks are followed, cycles are not
    return tmp_path


def test_scan_lists_single_files_and_folders(models_dir, tiny_models, caplog):
    ckpt = models_dir / "Stable-diffusion"
    with caplog.at_level(logging.WARNING):
        entries = scan_checkpoints(ckpt)
    by_name = {e.model_name: e for e in entries}
    assert set(by_name) == {"tiny-sd15", "sub_xl", "my-folder", "sub_xl-folder"}  # no .config dir, no .ckpt
    assert "old.ckpt" in caplog.text

    single = by_name["tiny-sd15"]
    sha = _sha(ckpt / "tiny-sd15.safetensors")
    assert single.title == f"tiny-sd15.safetensors [{sha[:10]}]"
    assert (single.source, single.family, single.sha256) == ("single_file", "sd15", sha)
    assert single.filename == str(ckpt / "tiny-sd15.safetensors")
    assert by_name["sub_xl"].title.startswith("sub/xl.safetensors [")
    assert by_name["sub_xl"].family == "sdxl"

    folder = by_name["my-folder"]
    unet_sha = _sha(ckpt / "my-folder" / "unet" / "diffusion_pytorch_model.safetensors")
    assert folder.title == f"my-folder [{unet_sha[:10]}]"
    assert (folder.source, folder.family, folder.sha256) == ("folder", "sd15", unet_sha)
    assert by_name["sub_xl-folder"].family == "sdxl"
    assert [e.title.lower() for e in entries] == sorted(e.title.lower() for e in entries)


def test_hash_cache_is_reused(models_dir, monkeypatch):
    ckpt = models_dir / "Stable-diffusion"
    calls = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p: calls.append(p) or real(p))
    first = scan_checkpoints(ckpt)
    assert len(calls) == len(first) == 4
    cache = json.loads((ckpt / ".pictale-hashes.json").read_text())
    assert {"size", "mtime_ns", "sha256"} <= set(cache["files"]["tiny-sd15.safetensors"])

    calls.clear()
    assert scan_checkpoints(ckpt) == first
    assert calls == []

    target = ckpt / "tiny-sd15.safetensors"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    scan_checkpoints(ckpt)
    assert calls == [target]


def test_resolve_by_title_name_path_and_tiny(models_dir, tiny_models):
    entries = scan_checkpoints(models_dir / "Stable-diffusion")
    xl = next(e for e in entries if e.model_name == "sub_xl")
    assert resolve_model(xl.title, models_dir) == xl
    assert resolve_model("sub_xl", models_dir) == xl
    assert resolve_model("sub/xl.safetensors", models_dir) == xl
    assert resolve_model(xl.sha256[:10], models_dir) == xl

    by_path = resolve_model(str(tiny_models["sdxl"]), models_dir)
    assert (by_path.source, by_path.family, by_path.model_name) == ("folder", "sdxl", "tiny-sdxl")

    tiny = resolve_model("tiny", models_dir, models_dir.parent / "demo")
    demo = "pictale-demo (tiny random weights: draws noise)"
    assert (tiny.source, tiny.model_name, tiny.family) == ("tiny", demo, "sd15")
    assert tiny.title == f"pictale-demo (tiny random weights: draws noise) [{tiny.sha256[:10]}]"
    assert tiny.filename == str(models_dir.parent / "demo" / "tiny-sd15")
    assert not (models_dir / "Stable-diffusion" / "tiny-sd15").exists()  # never among the user's checkpoints
    assert resolve_model(tiny.title, models_dir, models_dir.parent / "demo") == tiny

    hub = resolve_model("someorg/some-model", models_dir)
    assert (hub.source, hub.filename, hub.family) == ("hub", "someorg/some-model", None)


def test_resolve_refuses_pickles_and_reports_missing(models_dir):
    with pytest.raises(UnsafeModelFile) as err:
        resolve_model(str(models_dir / "Stable-diffusion" / "old.ckpt"), models_dir)
    assert "old.ckpt" in err.value.message and ".safetensors" in err.value.message
    with pytest.raises(UnsafeModelFile):
        resolve_model("old.ckpt", models_dir)
    with pytest.raises(ModelNotFound) as err:
        resolve_model("nope", models_dir)
    assert "nope" in err.value.message
    with pytest.raises(ModelNotFound):
        resolve_model(str(models_dir / "missing.safetensors"), models_dir)


def _fake_checkpoint(path, keys):
    """A safetensors header announcing big tensors, with no tensor data behind it."""
    header = {k: {"dtype": "F32", "shape": [1280, 1280], "data_offsets": [0, 1280 * 1280 * 4]} for k in keys}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def test_detect_family_reads_only_the_header(tmp_path, tiny_models, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("tensor data must not be read")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    unet = "model.diffusion_model.input_blocks.0.0.weight"
    xl = _fake_checkpoint(tmp_path / "xl.safetensors", [unet, "conditioner.embedders.1.model.ln_final.weight"])
    sd15 = _fake_checkpoint(
        tmp_path / "v15.safetensors",
        [unet, "cond_stage_model.transformer.text_model.final_layer_norm.weight"],
    )
    sd2 = _fake_checkpoint(tmp_path / "v2.safetensors", [unet, "cond_stage_model.model.ln_final.weight"])
    assert (detect_family(xl), detect_family(sd15), detect_family(sd2)) == ("sdxl", "sd15", "sd2")
    assert detect_family(tiny_models["sdxl_single"]) == "sdxl"
    assert detect_family(tiny_models["sd15"]) == "sd15"
    assert detect_family(tiny_models["sdxl"]) == "sdxl"

    lora = _fake_checkpoint(tmp_path / "lora.safetensors", ["lora_unet_down_blocks_0.lora_down.weight"])
    with pytest.raises(ModelLoadError, match=r"lora\.safetensors"):
        detect_family(lora)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(ModelLoadError, match=r"junk\.safetensors"):
        detect_family(tmp_path / "junk.safetensors")
    with pytest.raises(UnsafeModelFile):
        detect_family(tmp_path / "model.ckpt")


def test_real_config_tokenizers_give_clip_ids():
    sd15 = CLIPTokenizer.from_pretrained(packaged_config_dir("sd15") / "tokenizer")
    xl = CLIPTokenizer.from_pretrained(packaged_config_dir("sdxl") / "tokenizer")
    xl2 = CLIPTokenizer.from_pretrained(packaged_config_dir("sdxl") / "tokenizer_2")
    for tok in (sd15, xl, xl2):
        assert len(tok) == 49408 and tok.model_max_length == 77
        assert tok("a photo of a cat").input_ids == CAT_IDS
    assert (sd15.pad_token, xl2.pad_token, xl2.pad_token_id) == ("<|endoftext|>", "!", 0)


def test_config_dir_lookup(tiny_models, tmp_path):
    assert single_file_config_dir(tiny_models["sd15_single"], "sd15") == tiny_models["sd15_config"]
    assert single_file_config_dir(tmp_path / "real.safetensors", "sdxl") == packaged_config_dir("sdxl")
    with pytest.raises(ModelLoadError, match=r"v2\.safetensors"):
        single_file_config_dir(tmp_path / "v2.safetensors", "sd2")


def test_load_errors_name_the_file(tmp_path, models_dir):
    broken = _fake_checkpoint(
        tmp_path / "broken.safetensors",
        ["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.text_model.x"],
    )
    entry = resolve_model(str(broken), tmp_path)
    with pytest.raises(ModelLoadError, match=r"broken\.safetensors"):
        load_pipeline(entry)
    with pytest.raises(ModelNotFound, match="someorg/some-model"):
        load_pipeline(resolve_model("someorg/some-model", models_dir))
