"""The compiled path (--compile) and the low-VRAM mode (--low-vram) on the tiny SD 1.5 model, CPU fp32.

Inductor takes about two minutes to compile even the tiny UNet on a 2-core CPU, so these tests compile with
torch.compile's `aot_eager` backend: the same dynamo capture, guards and recompiles (what LoRA hot-swapping must
avoid) and AOTAutograd graphs, without inductor's code generation. Measured with inductor once (64 px, 4 steps):
max pixel difference 0 against eager. The tests allow 2/255.
"""

import numpy as np
import pytest
import torch

from pictale.core.types import AvatarKind, AvatarRef, GenerationSpec
from pictale.engine import models
from pictale.engine.engine import Engine
from pictale.engine.speed import SpeedOptions
from pictale.engine.speed.lora_slots import LoraSlots, slot_name

TOLERANCE = 2  # of 255, per channel
SIZE = 64
SPEC = GenerationSpec(prompt="a photo of a cat", negative_prompt="blurry", steps=4, width=SIZE, height=SIZE)


def _engine(tiny_models, family="sd15", **speed) -> Engine:
    options = SpeedOptions(**speed) if speed else None
    engine = Engine(device="cpu", dtype="float32", speed=options)
    engine.load(models.resolve_model(str(tiny_models[family]), tiny_models[family].parent))
    return engine


def _compiled_options(**extra):
    return {"compile": True, "sizes": ((SIZE, SIZE),), "backend": "aot_eager", **extra}


@pytest.fixture(scope="module")
def eager(tiny_models):
    return _engine(tiny_models)


@pytest.fixture(scope="module")
def compiled(tiny_models):
    torch._dynamo.reset()
    return _engine(tiny_models, **_compiled_options())


def _image(engine, spec=SPEC, seed=7) -> np.ndarray:
    result = engine.generate(spec, [spec.prompt], [spec.negative_prompt], [seed], [seed])
    return np.asarray(result.images[0], dtype=np.int16)


def _lora(path, weight, name="toy"):
    return AvatarRef(AvatarKind.LORA, name, weight, (path,), digest=f"d-{path.stem}")


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_compiled_image_matches_eager(eager, compiled):
    a, b = _image(eager), _image(compiled)
    assert a.shape == b.shape == (SIZE, SIZE, 3)
    assert np.abs(a - b).max() <= TOLERANCE
    assert compiled._pipe.unet._compiled_call_impl is not None  # compiled in place: still a UNet
    assert type(compiled._pipe.unet).__name__ == "UNet2DConditionModel"


@pytest.fixture(scope="module")
def slotted(tiny_models):
    """Eager, with the compiled mode's LoRA slots: what `compiled` runs, without torch.compile."""
    engine = _engine(tiny_models)
    engine._adapters.lora_slots = LoraSlots(engine._pipe, rank=64, slots=2)
    return engine


def _cases(tiny_models):
    kohya, peft = tiny_models["lora_kohya"], tiny_models["lora_peft"]
    return [
        (_lora(kohya, 0.75, "kohya"),),
        (_lora(peft, 0.5, "peft"),),
        (_lora(kohya, 0.25, "kohya"),),
        (_lora(peft, 1.0, "peft"), _lora(kohya, 0.5, "kohya")),
        (_lora(peft, -0.5, "peft"),),
        (),
    ]


def test_lora_avatar_switches_and_weights_do_not_recompile(slotted, compiled, tiny_models):
    """Two LoRA files (kohya with text-encoder layers, peft), alone and together, at several weights, then none:
    no new graph after the warm-up, and each image is the uncompiled one with the same slots."""
    _image(compiled)  # any first-call work at this exact spec is done before counting
    before = _graphs()
    plain = _image(slotted)
    for avatars in _cases(tiny_models):
        spec = GenerationSpec(**{**SPEC.__dict__, "avatars": avatars})
        want, got = _image(slotted, spec), _image(compiled, spec)
        assert np.abs(want - got).max() <= TOLERANCE, [a.name for a in avatars]
        if avatars:
            assert np.abs(got - plain).max() > 10  # the LoRA did act
    assert _graphs() == before  # not one recompile across switches and weight changes
    assert np.abs(_image(compiled) - plain).max() == 0  # and nothing of them is left


def test_lora_slots_compute_what_named_adapters_do(tiny_models):
    """The slots (rank-padded, weights in scaling tensors, two slots summed) against eager mode's named adapters,
    UNet outputs in float64: equal to rounding. (In float32 the random tiny UNet amplifies the different summation
    order to up to 9/255 after 4 steps; float64 shows that is rounding, not a different LoRA.)"""
    named, slots = _engine(tiny_models), _engine(tiny_models)
    slots._adapters.lora_slots = LoraSlots(slots._pipe, rank=64, slots=2)
    gen = torch.Generator().manual_seed(0)
    unet = named._pipe.unet
    x = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen, dtype=torch.float64)
    for engine in (named, slots):
        engine._pipe.unet.to(torch.float64)
    for avatars in _cases(tiny_models):
        outs = []
        for engine in (named, slots):
            engine._adapters.apply(engine._pipe, "sd15", avatars)
            with torch.inference_mode():
                outs.append(engine._pipe.unet(x, torch.tensor(500.0), encoder_hidden_states=text).sample)
        assert (outs[0] - outs[1]).abs().max() < 1e-9, [a.name for a in avatars]


def test_lora_limits_in_compiled_mode(tiny_models, compiled):
    from pictale.core.errors import UnsupportedFeature

    slots = compiled._adapters.lora_slots
    third = AvatarRef(AvatarKind.LORA, "third", 0.5, (tiny_models["lora_peft"],), digest="d-third")
    three = (_lora(tiny_models["lora_kohya"], 0.5, "k"), _lora(tiny_models["lora_peft"], 0.5, "p"), third)
    with pytest.raises(UnsupportedFeature, match="at most 2 LoRA"):
        compiled.generate(GenerationSpec(**{**SPEC.__dict__, "avatars": three}), ["x"], [""], [1], [1])
    assert slots.count == 2 and slot_name(0) in compiled._pipe.unet.peft_config


def test_startup_notes_name_compile_time_and_sizes(compiled):
    (note,) = compiled.speed_notes
    assert "compiled UNet and VAE decoder (aot_eager)" in note and f"for {SIZE}x{SIZE}" in note
    report = compiled.speed_report
    assert report["compiled"] is True and report["compile_sizes"] == [f"{SIZE}x{SIZE}"]
    assert report["compile_seconds"] > 0 and f"{report['compile_seconds']:.1f} s" in note


def test_service_reports_speed_without_torch(compiled):
    from types import SimpleNamespace

    from pictale.service.speed import speed_info, speed_notes

    svc = SimpleNamespace(_engine=compiled)
    assert speed_notes(svc) == compiled.speed_notes
    info = speed_info(svc)
    assert info["compiled"] and info["compile_sizes"] == [f"{SIZE}x{SIZE}"] and info["notes"]
    assert speed_info(SimpleNamespace(_engine=None)) == {
        "compiled": False, "compile_seconds": None, "compile_sizes": [], "low_vram": False, "notes": [],
    }  # fmt: skip


def test_compile_of_an_unsupported_family_is_a_note(tiny_models):
    engine = _engine(tiny_models, "sd3", **_compiled_options())
    assert engine.speed_notes == ["--compile: sd3 models run eager (only SD 1.5 and SDXL UNets are compiled)"]
    assert engine.speed_report == {"compiled": False}
    spec = GenerationSpec(prompt="a cat", steps=2, width=SIZE, height=SIZE)
    assert engine.generate(spec, ["a cat"], [""], [1], [1]).images  # and it still draws


def test_compile_that_fails_runs_eager(tiny_models, eager):
    torch._dynamo.reset()
    engine = _engine(tiny_models, **_compiled_options(backend="no-such-backend"))
    (note,) = engine.speed_notes
    assert note.startswith("--compile failed") and note.endswith("running eager")
    assert engine._pipe.unet._compiled_call_impl is None
    assert np.abs(_image(engine) - _image(eager)).max() == 0


def test_low_vram_tiles_the_vae_and_still_draws(tiny_models, eager):
    engine = _engine(tiny_models, low_vram=True)
    vae = engine._pipe.vae
    assert vae.use_tiling and vae.use_slicing
    assert engine.speed_notes == ["low VRAM: VAE tiling and slicing, no offload on cpu (CUDA only)"]
    assert engine.speed_report == {"low_vram": True, "offload": False}
    image = _image(engine)
    assert image.shape == (SIZE, SIZE, 3) and image.std() > 0


def test_compile_is_off_with_low_vram(tiny_models):
    engine = _engine(tiny_models, **_compiled_options(low_vram=True))
    assert engine.speed_notes[1].startswith("--compile is off with --low-vram")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="model CPU offload needs CUDA (none here)")
def test_low_vram_offloads_on_cuda(tiny_models):
    engine = Engine(device="cuda", dtype="float16", speed=SpeedOptions(low_vram=True))
    engine.load(models.resolve_model(str(tiny_models["sd15"]), tiny_models["sd15"].parent))
    assert "model CPU offload" in engine.speed_notes[0]
    assert engine.speed_report["offload"] is True
    assert engine.generate(SPEC, [SPEC.prompt], [""], [1], [1]).images
