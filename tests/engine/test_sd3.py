"""The T5 family (tiny SD3): loading, seeds, the long T5 prompt limit, samplers, img2img, hires, LoRA, guards."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from pictale.avatars.tensors import inspect_lora
from pictale.core.errors import JobCancelled, ModelLoadError, UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef, GenerationSpec, HiresSpec
from pictale.engine import models
from pictale.engine.batching import BatchItem
from pictale.engine.engine import Engine, RunControl
from pictale.engine.families.sd3.generate import T5Budget, t5_budget
from pictale.engine.families.support import check_avatars

WORDS = ["a", "photo", "of", "a", "cat"]


@pytest.fixture(scope="module")
def sd3(tiny_models):
    engine = Engine(device="cpu", dtype="float32", t5_max_tokens=256)
    engine.load(models.resolve_model(str(tiny_models["sd3"]), tiny_models["sd3"].parent))
    return engine


def run(engine, prompt="a photo of a cat", seed=1, negative="", control=None, **kw):
    spec = GenerationSpec(prompt=prompt, **{"steps": 2, "width": 64, "height": 64, **kw})
    n = spec.total_images
    result = engine.generate(spec, [prompt] * n, [negative] * n, [seed + i for i in range(n)], [0] * n, control)
    return result, spec


def pixels(result) -> list[bytes]:
    return [img.convert("RGB").tobytes() for img in result.images]


def words(n: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


def lora_ref(path, name="toy", weight=1.0, family=None, source="avatar"):
    return AvatarRef(AvatarKind.LORA, name, weight, (path,), digest=f"d-{name}", family=family, source=source)


def test_tiny_sd3_loads_through_the_real_loader_and_is_listed_as_sd3(tiny_models, tmp_path):
    entry = models.resolve_model(str(tiny_models["sd3"]), tmp_path)
    assert entry.family == "sd3" and entry.source == "folder"
    pipe = models.load_pipeline(entry)
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert len(pipe.tokenizer_3) > 2 and pipe.tokenizer_3.tokenize("a cat") == ["▁a", "▁cat"]
    assert models.pipeline_family(pipe) == "sd3"
    shutil.copytree(tiny_models["sd3"], tmp_path / "Stable-diffusion" / "my-sd3")
    scanned = models.scan_checkpoints(tmp_path / "Stable-diffusion")
    assert [(e.model_name, e.family) for e in scanned] == [("my-sd3", "sd3")]


def test_sd3_single_file_is_refused_naming_the_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "sd3_medium.safetensors"
    save_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": np.zeros((3, 1), np.float32)}, path)
    with pytest.raises(ModelLoadError, match=r"^sd3_medium.safetensors: a Stable Diffusion 3 single-file.*folder"):
        models.resolve_model(str(path), tmp_path)


def test_same_seed_same_image_other_seed_other_image(sd3):
    a, spec = run(sd3, seed=5)
    assert sd3.family == "sd3" and a.images[0].size == (64, 64)
    assert np.asarray(a.images[0]).std() > 1  # not a flat image
    assert pixels(run(sd3, seed=5)[0]) == pixels(a)
    assert pixels(run(sd3, seed=6)[0]) != pixels(a)
    assert a.infotext["T5 tokens"] == "6/256" and "infotext_extra" not in spec.extra  # the spec is not written


def test_words_after_the_clip_limit_reach_the_image_through_t5(sd3):
    prefix = words(80)
    assert len(sd3._pipe.tokenizer(prefix).input_ids) > 77  # CLIP cuts the prompt before the last words
    castle, _ = run(sd3, prefix + " castle on a hill")
    dragon, _ = run(sd3, prefix + " dragon in the sky")
    assert pixels(castle) != pixels(dragon)
    assert castle.infotext["T5 tokens"] == "85/256"


def test_long_prompts_switch_to_512_and_are_cut_beyond(sd3, tiny_models):
    tok = sd3._pipe.tokenizer_3
    assert t5_budget(tok, [words(100), ""], 256) == T5Budget(101, 256)
    assert t5_budget(tok, [words(100)], 64) == T5Budget(101, 512)  # over the setting: SD3's 512
    assert t5_budget(tok, [words(100)], 4096) == T5Budget(101, 512)  # the setting stops at 512
    long, _ = run(sd3, words(300))
    assert long.infotext["T5 tokens"] == "301/512" and "T5 truncated" not in long.infotext
    cut_a, _ = run(sd3, words(600) + " castle")
    cut_b, _ = run(sd3, words(600) + " dragon")
    assert pixels(cut_a) == pixels(cut_b)  # everything after token 512 is gone
    assert cut_a.infotext["T5 tokens"] == "602/512"
    assert cut_a.infotext["T5 truncated"] == "prompt cut to its first 512 of 602 T5 tokens"


def test_the_t5_setting_is_the_sequence_length_of_short_prompts(sd3):
    sd3.t5_max_tokens = 64
    try:
        short, _ = run(sd3, words(20))
        assert run(sd3, words(100))[0].infotext["T5 tokens"] == "101/512"
    finally:
        sd3.t5_max_tokens = 256
    default, _ = run(sd3, words(20))
    assert (short.infotext["T5 tokens"], default.infotext["T5 tokens"]) == ("21/64", "21/256")
    assert pixels(short) != pixels(default)  # SD3 attends to T5's padding too: the length is part of the image


def test_tiling_is_ignored_on_sd3_and_said(sd3):
    tiled, _ = run(sd3, tiling=True)
    assert pixels(tiled) == pixels(run(sd3)[0])
    assert tiled.infotext["Tiling"] is None and "not supported on SD3" in tiled.infotext["Tiling note"]


def test_attention_syntax_is_plain_text_for_t5(sd3):
    weighted, _ = run(sd3, "(a photo:1.3) of [a cat] BREAK (castle)")
    plain, _ = run(sd3, "a photo of a cat castle")
    assert pixels(weighted) == pixels(plain)


@pytest.mark.parametrize(
    ("sampler", "ran", "note"),
    [("Euler", "Euler", False), ("Euler a", "Euler", True), ("Heun", "Heun", False), ("DPM++ 2M", "DPM++ 2M", False)],
)
def test_samplers_map_to_flow_matching_and_say_what_ran(sd3, sampler, ran, note):
    steps = []
    a, _ = run(sd3, sampler=sampler, control=RunControl(on_step=lambda *s: steps.append(s)))
    assert a.infotext["Sampler"] == ran and ("Sampler note" in a.infotext) == note
    assert pixels(run(sd3, sampler=sampler)[0]) == pixels(a)
    assert [s[0] for s in steps] == [1, 2] if ran != "Heun" else [s[0] for s in steps] == [1, 1, 2]


def test_img2img_inpaint_and_hires(sd3):
    init = Image.new("RGB", (64, 64), (200, 120, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    spec = GenerationSpec(init_images=(init,), steps=4, width=64, height=64, denoising_strength=0.5)
    out = sd3.generate(spec, ["a cat"], [""], [3], [0], None, [init])
    assert out.images[0].size == (64, 64) and out.images[0].tobytes() != init.tobytes()
    dpm = GenerationSpec(init_images=(init,), steps=4, width=64, height=64, sampler="DPM++ 2M")
    assert sd3.generate(dpm, ["a cat"], [""], [3], [0], None, [init]).infotext["Sampler"] == "Euler"
    inpaint = GenerationSpec(init_images=(init,), mask=mask, steps=3, width=64, height=64)
    assert sd3.generate(inpaint, ["a cat"], [""], [3], [0], None, [init], [mask]).images[0].size == (64, 64)
    for upscaler in ("Latent", "Lanczos"):
        hires, _ = run(sd3, hires=HiresSpec(scale=1.5, upscaler=upscaler, denoising_strength=0.5))
        assert hires.images[0].size == (96, 96)


def test_cancel_and_interrupt(sd3):
    with pytest.raises(JobCancelled):
        run(sd3, control=RunControl(cancelled=lambda: True))
    stopped, _ = run(sd3, n_iter=2, steps=3, control=RunControl(interrupted=lambda: True))
    assert stopped.interrupted and len(stopped.images) == 1


def test_lora_weight_zero_is_the_base_image_and_one_changes_it(sd3, tiny_models):
    assert inspect_lora(tiny_models["lora_sd3"], "tiny_sd3.safetensors").family == "sd3"
    base = pixels(run(sd3)[0])
    zero = pixels(run(sd3, avatars=(lora_ref(tiny_models["lora_sd3"], weight=0.0, family="sd3"),))[0])
    on = pixels(run(sd3, avatars=(lora_ref(tiny_models["lora_sd3"], weight=1.0, family="sd3"),))[0])
    assert zero == base and on != base
    assert pixels(run(sd3)[0]) == base  # nothing left behind


def test_avatars_sd3_cannot_apply_are_clear_422s(sd3, tiny_models, tmp_path):
    # Face/style avatars run on SD3 through its IP-Adapter (test_sd3_ip_adapter.py); poses cannot.
    face = AvatarRef(AvatarKind.FACE, "lucy", 0.5, (tmp_path / "a.png",), digest="d-lucy")
    pose = AvatarRef(AvatarKind.POSE, "run", 0.5, (tmp_path / "a.png",), digest="d-run")
    with pytest.raises(UnsupportedFeature) as err:
        run(sd3, avatars=(pose,))
    assert err.value.status == 422
    assert err.value.message == (
        "pose avatars (<be-pose:run>) need an OpenPose ControlNet, which pictale does not support on SD3 models; "
        "use LoRA, face or style avatars, or an SD 1.5/SDXL model"
    )
    with pytest.raises(UnsupportedFeature, match="lora 'toy' was trained for sd15; the loaded model is sd3"):
        run(sd3, avatars=(lora_ref(tiny_models["lora_peft"], family="sd15"),))
    with pytest.raises(UnsupportedFeature, match=r"lora 'kohya' was trained for a UNet model.*sd3"):
        run(sd3, avatars=(lora_ref(tiny_models["lora_kohya"], "kohya", source="lora-file"),))
    # The same rules answer before queueing, also for an SD3 LoRA on an SD 1.5 model; SD 1.5 vs SDXL stays
    # with the engine, as before.
    sd3_lora = lora_ref(tiny_models["lora_sd3"], family="sd3")
    with pytest.raises(UnsupportedFeature, match="lora 'toy' was trained for sd3; the loaded model is sd15"):
        check_avatars([sd3_lora], "sd15")
    check_avatars([lora_ref(tiny_models["lora_sdxl"], family="sdxl"), face], "sd15")
    check_avatars([face, sd3_lora], "sd3")  # one face: SD3's IP-Adapter takes it


def test_batches_run_each_request_alone(sd3):
    specs = [GenerationSpec(prompt=p, steps=2, width=64, height=64) for p in ("a cat", "a dog")]
    items = [BatchItem(s, [s.prompt], [""], [7], [0], RunControl()) for s in specs]
    results = sd3.generate_batch(items)
    for spec, result in zip(specs, results, strict=True):
        assert pixels(result) == pixels(run(sd3, spec.prompt, seed=7)[0])


def test_prompt_embeddings_are_cached_and_give_the_same_pixels(sd3, monkeypatch):
    calls = []
    encode = sd3._pipe.encode_prompt

    def counted(*args, **kwargs):
        if kwargs.get("prompt") is not None:  # the pipeline calls it too, with the embeddings given
            calls.append(kwargs["prompt"])
        return encode(*args, **kwargs)

    monkeypatch.setattr(sd3._pipe, "encode_prompt", counted)
    first, _ = run(sd3, "a red kite over a hill", seed=4, negative="blurry")
    again, _ = run(sd3, "a red kite over a hill", seed=4, negative="blurry")
    assert pixels(again) == pixels(first) and len(calls) == 1  # the second job reused the embeddings
    run(sd3, "a red kite over a hill", seed=4, negative="dark")
    no_cfg, _ = run(sd3, "a red kite over a hill", seed=4, negative="blurry", cfg_scale=1.0)
    assert len(calls) == 3 and pixels(no_cfg) != pixels(first)  # other negative, other CFG: encoded anew
