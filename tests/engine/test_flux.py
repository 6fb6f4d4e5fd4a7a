"""FLUX.1 on the engine (tiny schnell, dev and Kontext loaded through the same code as real folders): seeds,
guidance, true CFG, T5 limits, samplers, img2img, inpaint, hires, previews, variation seeds and Kontext editing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pictale.core.types import GenerationSpec, HiresSpec
from pictale.engine import models
from pictale.engine.batching import BatchItem
from pictale.engine.engine import Engine, RunControl
from pictale.engine.families.flux.generate import guidance
from pictale.engine.families.flux.variant import flux_variant

PROMPT = "a photo of a cat"


def _engine(tiny_models, variant: str) -> Engine:
    engine = Engine(device="cpu", dtype="float32")
    engine.load(models.resolve_model(str(tiny_models[f"flux_{variant}"]), tiny_models["flux_dev"].parent))
    return engine


@pytest.fixture(scope="module")
def engines(tiny_models):
    return {variant: _engine(tiny_models, variant) for variant in ("schnell", "dev", "kontext")}


def run(engine, seed=3, prompt=PROMPT, negative="", control=None, init=None, mask=None, **fields):
    spec = GenerationSpec(**{"prompt": prompt, "steps": 2, "width": 64, "height": 64, "cfg_scale": 1.0, **fields})
    if init is not None:
        spec = GenerationSpec(**{**spec.__dict__, "init_images": (init,), "mask": mask})
    return engine.generate(
        spec, [prompt], [negative], [seed], [seed + 1], control,
        init_images=[init] if init is not None else None, masks=[mask] if mask is not None else None,
    )  # fmt: skip


def px(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_family_variant_and_entry(engines, tiny_models):
    for variant, engine in engines.items():
        assert engine.family == "flux" and engine.flux_variant == variant
        assert engine.entry.family == "flux"
        assert flux_variant(tiny_models[f"flux_{variant}"]) == variant
    assert type(engines["kontext"]._pipe).__name__ == "FluxKontextPipeline"


@pytest.mark.parametrize("variant", ["schnell", "dev", "kontext"])
def test_same_seed_same_pixels_other_seed_other_pixels(engines, variant):
    engine = engines[variant]
    first = run(engine)
    assert first.images[0].size == (64, 64)
    assert np.array_equal(px(first), px(run(engine)))
    assert not np.array_equal(px(first), px(run(engine, seed=4)))


def test_schnell_ignores_distilled_guidance_and_dev_follows_it(engines):
    schnell, dev = engines["schnell"], engines["dev"]
    assert np.array_equal(px(run(schnell, distilled_cfg_scale=0.0)), px(run(schnell, distilled_cfg_scale=7.0)))
    low, high = run(dev, distilled_cfg_scale=1.0), run(dev, distilled_cfg_scale=7.0)
    assert not np.array_equal(px(low), px(high))
    assert np.array_equal(px(run(dev)), px(run(dev, distilled_cfg_scale=3.5)))  # the default when the job gives none
    assert np.array_equal(px(run(engines["kontext"])), px(run(engines["kontext"], distilled_cfg_scale=2.5)))
    assert guidance(GenerationSpec(distilled_cfg_scale=4.0), "schnell") is None


def test_negative_prompt_runs_only_with_true_cfg(engines):
    dev = engines["dev"]
    plain = run(dev)
    ignored = run(dev, negative="a dog")
    assert np.array_equal(px(plain), px(ignored))  # CFG scale 1: one pass, no negative
    assert ignored.infotext["Negative prompt note"].startswith("unused: FLUX.1 reads the negative prompt only")
    cfg = run(dev, negative="a dog", cfg_scale=3.0)
    assert "Negative prompt note" not in cfg.infotext
    assert not np.array_equal(px(cfg), px(plain))
    assert not np.array_equal(px(cfg), px(run(dev, negative="a tree", cfg_scale=3.0)))


def test_t5_limits_schnell_256_dev_512(engines):
    long = " ".join(["cat"] * 300)
    schnell = run(engines["schnell"], prompt=long).infotext
    assert schnell["T5 tokens"] == "301/256"
    assert schnell["T5 truncated"] == "prompt cut to its first 256 of 301 T5 tokens"
    dev = run(engines["dev"], prompt=long).infotext
    assert dev["T5 tokens"] == "301/512" and "T5 truncated" not in dev
    assert run(engines["dev"]).infotext["T5 tokens"] == "6/256"


def test_samplers_map_to_flow_matching(engines):
    info = run(engines["schnell"], sampler="Heun").infotext
    assert info["Sampler"] == "Euler"
    assert info["Sampler note"] == "Heun -> Euler (FLUX.1 samples with flow matching)"
    assert run(engines["dev"], sampler="DPM++ 2M").infotext["Sampler"] == "DPM++ 2M"
    assert run(engines["schnell"], sampler="DPM++ 2M").infotext["Sampler"] == "Euler"


def test_img2img_and_inpaint(engines):
    dev = engines["dev"]
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    same = run(dev, init=init, denoising_strength=0.0)
    assert same.images[0].tobytes() == init.tobytes()  # nothing to denoise: the init image as it is
    a = run(dev, init=init, denoising_strength=0.5, steps=4)
    assert np.array_equal(px(a), px(run(dev, init=init, denoising_strength=0.5, steps=4)))
    assert not np.array_equal(px(a), px(run(dev, init=init, denoising_strength=0.9, steps=4)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    inpainted = run(dev, init=init, mask=mask, denoising_strength=0.9, steps=4)
    assert inpainted.images[0].size == (64, 64)
    assert not np.array_equal(px(inpainted), px(a))


def test_kontext_edits_with_the_init_image_as_reference(engines):
    kontext = engines["kontext"]
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    blue = Image.new("RGB", (64, 64), (30, 30, 220))
    full_red, full_blue = (
        run(kontext, init=red, denoising_strength=1.0),
        run(kontext, init=blue, denoising_strength=1.0),
    )
    assert full_red.images[0].size == (64, 64)  # max_area keeps the job's size (Kontext would render 1024 px)
    assert not np.array_equal(px(full_red), px(full_blue))  # the reference steers the new picture
    # at low strength the result keeps the reference's content: nearer to it than a full edit is
    low = run(kontext, init=red, denoising_strength=0.25, steps=4)
    target = np.asarray(red, dtype=np.int16)
    assert np.abs(px(low) - target).mean() < np.abs(px(full_red) - target).mean()
    txt = run(kontext)
    assert txt.images[0].size == (64, 64)


def test_hires_fix_and_previews(engines):
    previews: list[list[str]] = []
    engine = engines["dev"]
    control = RunControl(on_latents=lambda step, latents: previews.append(engine.previews(latents, 64, 64)))
    hires = HiresSpec(scale=1.5, denoising_strength=0.5, upscaler="Latent")
    result = run(engine, control=control, hires=hires)
    assert result.images[0].size == (96, 96)
    assert len(previews) == 3 and all(len(p) == 1 for p in previews)  # 2 first-pass steps, 1 hires step
    pixel = run(engine, hires=HiresSpec(scale=2, denoising_strength=0.5, upscaler="Lanczos"))
    assert pixel.images[0].size == (128, 128)


def test_variation_seed(engines):
    dev = engines["dev"]
    base = run(dev, width=64, height=48)
    assert base.images[0].size == (64, 48)
    assert np.array_equal(px(base), px(run(dev, width=64, height=48, subseed_strength=0.0)))
    varied = run(dev, width=64, height=48, subseed_strength=0.5)
    assert not np.array_equal(px(base), px(varied))


def test_interrupt_ends_sampling_early(engines):
    steps: list[int] = []
    control = RunControl(on_step=lambda step, total, b, n: steps.append(step), interrupted=lambda: bool(steps))
    result = run(engines["schnell"], control=control, steps=4)
    assert result.interrupted and len(result.images) == 1 and steps == [1, 2]  # 2 of 4 steps ran


def test_batch_images_equal_their_seeds_alone(engines):
    dev = engines["dev"]
    spec = GenerationSpec(prompt=PROMPT, steps=2, width=64, height=64, cfg_scale=1.0, batch_size=2)
    both = dev.generate(spec, [PROMPT, "a dog"], ["", ""], [3, 9], [4, 10])
    assert np.array_equal(np.asarray(both.images[0], dtype=np.int16), px(run(dev, seed=3)))
    assert np.array_equal(np.asarray(both.images[1], dtype=np.int16), px(run(dev, seed=9, prompt="a dog")))


def test_queued_requests_merge_into_one_call_with_the_same_pixels(engines):
    dev = engines["dev"]
    calls = []
    pipe = dev._pipe
    original = type(pipe).__call__

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs["generator"]))
        return original(self, *args, **kwargs)

    spec = GenerationSpec(prompt=PROMPT, steps=2, width=64, height=64, cfg_scale=1.0)
    items = [
        BatchItem(spec, [PROMPT], [""], [3], [4], RunControl()),
        BatchItem(spec, ["a dog in the snow"], [""], [9], [10], RunControl()),
    ]
    type(pipe).__call__ = counting
    try:
        results = dev.generate_batch(items)
    finally:
        type(pipe).__call__ = original
    assert calls == [2]  # one pipeline call for both requests
    assert np.array_equal(px(results[0]), px(run(dev, seed=3)))
    assert np.array_equal(px(results[1]), px(run(dev, seed=9, prompt="a dog in the snow")))
    assert results[0].infotext["T5 tokens"] == "6/256"
