"""Checkpoint choice, early stop, CLIP scoring plumbing (tiny CLIP) and the presets."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pictale.training import presets
from pictale.training.scoring import choose, clip_prompt, sample, score, should_stop
from pictale.training.spec import TrainingSpec
from tests.training.helpers import load, noise_photos


def _h(step, i, t):
    return {"step": step, "clip_i": i, "clip_t": t}


def test_choose_prefers_likeness_within_the_adherence_floor():
    history = [_h(0, 0.50, 0.30), _h(100, 0.60, 0.30), _h(200, 0.70, 0.29), _h(300, 0.80, 0.20)]
    step, reason = choose(history)
    assert step == 200 and "likeness 0.700" in reason  # 300 is likelier but lost prompt adherence
    assert choose([_h(0, 0.5, 0.3), _h(100, 0.6, 0.1)])[1].endswith("lower learning rate)")
    assert choose([_h(100, 0.6, 0.3), _h(200, 0.6, 0.31)])[0] == 200  # tie on likeness: adherence decides
    with pytest.raises(ValueError):
        choose([_h(0, 0.5, 0.3)])


def test_should_stop_after_two_falls_past_the_best():
    rising = [_h(0, 0.5, 0.3), _h(100, 0.6, 0.3), _h(200, 0.7, 0.3)]
    assert not should_stop(rising)
    assert not should_stop([*rising, _h(300, 0.65, 0.3)])
    assert should_stop([*rising, _h(300, 0.65, 0.3), _h(400, 0.66, 0.3)])
    assert not should_stop([*rising, _h(300, 0.65, 0.3), _h(400, 0.71, 0.3)])


def test_sample_and_score_through_the_tiny_clip(tiny_models, tiny_clip, tmp_path):
    torch.set_num_threads(1)
    pipe = load(tiny_models, "sd15")
    prompts = ["photo of sks person", "sks person at the beach"]
    images = sample(pipe, prompts, [1, 2], (64, 64), steps=3)
    assert len(images) == 4 and all(isinstance(im, Image.Image) for im in images)
    again = sample(pipe, prompts, [1, 2], (64, 64), steps=3)
    assert [a.tobytes() for a in images] == [b.tobytes() for b in again]  # fixed seeds
    photos = noise_photos(tmp_path)
    scores = score(images, photos, [clip_prompt(p, "sks", "person") for p in prompts], tiny_clip)
    assert set(scores) == {"clip_i", "clip_t"} and all(-1 <= v <= 1 for v in scores.values())
    own = [Image.open(p.path) for p in photos]
    assert score(own, photos, ["x"], tiny_clip)["clip_i"] == pytest.approx(1.0, abs=1e-5)
    assert clip_prompt("photo of sks person", "sks", "person") == "photo of person"


def test_presets_fill_spec_fields():
    for kind in ("face", "character", "style", "object"):
        for family in presets.FAMILIES:
            fields = presets.preset_defaults(kind, family)
            spec = TrainingSpec(name="n", trigger="t", kind=kind, base_model="b", family=family, **fields)
            assert all("{trigger}" in p for p in spec.sample_prompts) and spec.alpha == spec.rank
    assert presets.preset_defaults("face", "sd15")["flip"] is False
    xl = presets.preset_defaults("style", "sdxl", vram_gb=12)
    assert xl["gradient_checkpointing"] and xl["extra"]["noise_offset"] == 0.05
    assert presets.memory_preset("flux", 16, bitsandbytes=True)["optimizer"] == "adamw8bit"
    assert presets.memory_preset("flux", 16, bitsandbytes=False)["optimizer"] == "adamw"
    assert presets.memory_preset("flux", 16)["extra"]["base_quantization"] == "nf4"
    with pytest.raises(ValueError, match="at least 12 GB"):
        presets.preset_defaults("face", "sdxl", vram_gb=8)
    with pytest.raises(ValueError, match="unknown kind"):
        presets.preset_defaults("pet", "sd15")
    assert presets.presets_table().count("\n") == len(presets.VRAM_PRESETS) + 1
