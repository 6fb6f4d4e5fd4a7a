"""Cheap latent previews (SD 1.5, SDXL, SD3): shape and size, and that watching the latents never changes the image."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pictale.core.types import GenerationSpec
from pictale.engine import models, samplers
from pictale.engine.engine import Engine, RunControl
from pictale.engine.previews import latents_to_rgb, preview_images, preview_pngs, preview_size, watch_x0
from tests.engine.test_batching import sd15  # noqa: F401 - fixture


def test_latents_map_to_rgb_per_family():
    latents = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    rgb = latents_to_rgb(latents, "sd15")
    assert rgb.shape == (2, 8, 6, 3) and rgb.dtype == torch.uint8
    assert not torch.equal(rgb, latents_to_rgb(latents, "sdxl"))  # other factors (and a bias)
    assert latents_to_rgb(torch.zeros(1, 4, 2, 2), "sd15").unique().tolist() == [128]  # 0 is mid grey
    # SD3's 16 channels have their own map (ComfyUI's SD3 factors); a zero latent shows its bias.
    sd3_rgb = latents_to_rgb(torch.zeros(1, 16, 8, 8), "sd3")
    assert sd3_rgb.shape == (1, 8, 8, 3) and sd3_rgb[0, 0, 0].tolist() == [158, 155, 152]
    assert not torch.equal(latents_to_rgb(torch.randn(1, 16, 8, 8), "sd3"), sd3_rgb)
    assert latents_to_rgb(torch.zeros(1, 16, 8, 8), "sd15") is None  # channels the family's map does not take
    assert latents_to_rgb(torch.zeros(1, 4, 8, 8), "sd3") is None


def test_preview_size_is_the_job_size_capped():
    assert preview_size(64, 64) == (64, 64)
    assert preview_size(512, 768) == (171, 256)
    assert preview_size(1024, 512) == (256, 128)
    latents = torch.randn(3, 4, 12, 8)
    images = preview_images(latents, "sd15", 64, 96)
    assert [img.size for img in images] == [(64, 96)] * 3  # upscaled from 8x12 latents
    png = base64.b64decode(preview_pngs(latents[:1], "sd15", 64, 96)[0])
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (64, 96)


def test_sd3_jobs_get_previews(tiny_models):
    engine = Engine(device="cpu", dtype="float32")
    engine.load(models.resolve_model(str(tiny_models["sd3"]), tiny_models["sd3"].parent))
    spec = GenerationSpec(prompt="a photo of a cat", steps=3, width=64, height=48)
    shown: list[tuple[int, list[str]]] = []

    def watch(step, latents):
        assert latents.shape == (1, 16, 6, 8)
        shown.append((step, engine.previews(latents, spec.width, spec.height)))

    watched = engine.generate(spec, [spec.prompt], [""], [5], [0], RunControl(on_latents=watch))
    assert [step for step, _ in shown] == [1, 2, 3] and all(len(pngs) == 1 for _, pngs in shown)
    png = base64.b64decode(shown[-1][1][0])
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (64, 48)
    plain = engine.generate(spec, [spec.prompt], [""], [5], [0])
    assert np.array_equal(np.asarray(plain.images[0]), np.asarray(watched.images[0]))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "Heun"])
def test_previews_do_not_change_the_image(sd15, sampler):  # noqa: F811
    spec = GenerationSpec(prompt="a photo of a cat", steps=4, width=64, height=64, sampler=sampler, batch_size=2)
    seeds, prompts, negatives = [5, 6], ["a photo of a cat", "a dog"], ["", "blurry"]
    plain = sd15.generate(spec, prompts, negatives, seeds, [0, 0])
    shown: list[tuple[int, tuple]] = []

    def watch(step, latents):
        shown.append((step, tuple(latents.shape)))
        sd15.previews(latents, spec.width, spec.height)

    watched = sd15.generate(spec, prompts, negatives, seeds, [0, 0], RunControl(on_latents=watch))
    for a, b in zip(plain.images, watched.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [s for s, _ in shown][-1] == 4 and all(shape == (2, 4, 8, 8) for _, shape in shown)


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "DDIM"])
def test_previews_show_the_samplers_estimate_of_the_final_latents(sd15, sampler):  # noqa: F811
    scheduler = samplers.make_scheduler(sd15._base_scheduler_config, sampler, None)
    scheduler.set_timesteps(4)
    box = watch_x0(scheduler)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
    noise_pred = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    prev = scheduler.step(noise_pred, scheduler.timesteps[0], latents, return_dict=False)[0]
    assert box["x0"] is not None and box["x0"].shape == latents.shape
    assert not torch.equal(box["x0"], prev)  # the denoised estimate, not the next noisy latents
