"""Merged batches: several requests in one pipeline call, every image bit-identical to its request alone."""

from __future__ import annotations

import numpy as np
import pytest

from pictale.core.errors import JobCancelled
from pictale.core.types import GenerationSpec
from pictale.engine import models
from pictale.engine.batching import BatchItem
from pictale.engine.engine import Engine, RunControl
from tests.engine.test_adapters import face, files, lora  # noqa: F401 - `files` is a fixture

LONG = ", ".join(["a red house by a blue lake under tall green trees"] * 8)  # over 75 tokens: 154 positions
PROMPTS = ["a photo of a cat", "a dog running", "a red chair in a room", "a tree", "an old man", "a castle"]
NEGATIVES = ["", "blurry", "", "ugly, bad", "", "low quality"]


def _engine(tiny_models, family: str) -> Engine:
    paths = {"ip_adapter_path": tiny_models["ip_adapter"], "controlnet_path": tiny_models["controlnet"]}
    engine = Engine(device="cpu", dtype="float32", **paths)
    engine.load(models.resolve_model(str(tiny_models[family]), tiny_models[family].parent))
    return engine


@pytest.fixture(scope="module")
def sd15(tiny_models):
    return _engine(tiny_models, "sd15")


@pytest.fixture(scope="module")
def sdxl(tiny_models):
    return _engine(tiny_models, "sdxl")


def _items(sizes, prompts=PROMPTS, controls=None, **spec_kw) -> list[BatchItem]:
    kw = {"steps": 3, "width": 64, "height": 64, "sampler": "Euler a", "cfg_scale": 7.0, **spec_kw}
    items, i = [], 0
    for k, n in enumerate(sizes):
        spec = GenerationSpec(prompt=prompts[i], batch_size=n, **kw)
        control = controls[k] if controls else RunControl()
        ps = [prompts[(i + j) % len(prompts)] for j in range(n)]
        ns = [NEGATIVES[(i + j) % len(NEGATIVES)] for j in range(n)]
        items.append(BatchItem(spec, ps, ns, [100 + 7 * (i + j) for j in range(n)], [0] * n, control))
        i += n
    return items


def _alone(engine, item: BatchItem) -> list[np.ndarray]:
    out = engine.generate(item.spec, item.prompts, item.negatives, item.seeds, item.subseeds)
    return [np.asarray(img) for img in out.images]


def _check_identical(engine, items) -> list[int]:
    """Run `items` merged, compare with each alone; returns the batch size of every UNet call of the merged run."""
    alone = [_alone(engine, item) for item in items]
    seen: list[int] = []
    handle = engine._pipe.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        outs = engine.generate_batch(items)
    finally:
        handle.remove()
    for out, expected in zip(outs, alone, strict=True):
        assert not isinstance(out, BaseException), out
        got = [np.asarray(img) for img in out.images]
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert np.array_equal(a, b)  # bit-identical pixels, so identical PNG bytes
    return seen


@pytest.mark.parametrize(
    ("family", "sizes", "spec_kw"),
    [
        ("sd15", [1, 2, 1], {}),  # CFG, ancestral noise from each image's generator
        ("sd15", [1, 1, 1], {"sampler": "DPM++ 2M SDE", "cfg_scale": 1.0}),  # no CFG: one-image convolutions
        ("sdxl", [1, 1], {"sampler": "Euler"}),
    ],
)
def test_merged_batch_is_bit_identical_to_each_request_alone(family, sizes, spec_kw, request):
    engine = request.getfixturevalue(family)
    seen = _check_identical(engine, _items(sizes, **spec_kw))
    rows = sum(sizes) * (1 if spec_kw.get("cfg_scale") == 1.0 else 2)
    assert set(seen) == {rows}  # one merged call, every step


def test_with_the_same_avatars(sd15, tiny_models, files):  # noqa: F811
    avatars = (lora(tiny_models["lora_kohya"]), face(files))
    seen = _check_identical(sd15, _items([1, 1], avatars=avatars, sampler="Euler"))
    assert set(seen) == {4}


def test_prompts_of_another_length_run_in_their_own_call(sd15):
    prompts = ["a photo of a cat", LONG, "a dog running"]
    seen = _check_identical(sd15, _items([1, 1, 1], prompts=prompts, sampler="Euler"))
    assert seen == [4] * 3 + [2] * 3  # the two short prompts together, the long one alone


def test_a_sampler_with_noise_seeded_per_call_runs_each_request_alone(sd15):
    seen = _check_identical(sd15, _items([1, 1], sampler="DPM++ SDE"))
    assert set(seen) == {2}


def _stepper(on_step=None, **flags):
    state = {"step": 0, "cancelled": 0}

    def step(s, total, *_):
        state["step"] = s
        if on_step:
            on_step(s, state)

    control = RunControl(
        on_step=step,
        cancelled=lambda: flags.get("cancel_at") is not None and state["step"] >= flags["cancel_at"],
        interrupted=lambda: flags.get("interrupt_at") is not None and state["step"] >= flags["interrupt_at"],
        on_cancelled=lambda: state.__setitem__("cancelled", state["cancelled"] + 1),
    )
    return control, state


def test_a_cancelled_request_leaves_the_batch_and_the_others_finish(sd15):
    (c1, s1), (c2, s2), (c3, s3) = _stepper(), _stepper(cancel_at=1), _stepper()
    items = _items([1, 1, 1], controls=[c1, c2, c3], steps=4, sampler="Euler")
    alone = [_alone(sd15, items[0]), _alone(sd15, items[2])]
    outs = sd15.generate_batch(items)
    assert isinstance(outs[1], JobCancelled) and s2["cancelled"] == 1 and s2["step"] == 1
    assert s1["step"] == s3["step"] == 4
    assert np.array_equal(np.asarray(outs[0].images[0]), alone[0][0])
    assert np.array_equal(np.asarray(outs[2].images[0]), alone[1][0])

    cancel_all = [_stepper(cancel_at=2)[0] for _ in range(2)]
    outs = sd15.generate_batch(_items([1, 1], controls=cancel_all, steps=4, sampler="Euler"))
    assert all(isinstance(out, JobCancelled) for out in outs)


def test_interrupt_stops_the_whole_batch(sd15):
    (c1, s1), (c2, s2) = _stepper(interrupt_at=2), _stepper()
    outs = sd15.generate_batch(_items([1, 2], controls=[c1, c2], steps=6, sampler="Euler"))
    assert s1["step"] == s2["step"] == 3  # the step that saw the interrupt is the last one
    assert [len(out.images) for out in outs] == [1, 2] and all(out.interrupted for out in outs)


def test_each_request_sees_its_own_latents(sd15):
    seen: dict[int, list] = {0: [], 1: []}
    controls = []
    for k in seen:
        control = RunControl(on_latents=lambda step, latents, k=k: seen[k].append((step, tuple(latents.shape))))
        controls.append(control)
    sd15.generate_batch(_items([2, 1], controls=controls, steps=2, sampler="Euler"))
    assert seen[0] == [(1, (2, 4, 8, 8)), (2, (2, 4, 8, 8))]
    assert seen[1] == [(1, (1, 4, 8, 8)), (2, (1, 4, 8, 8))]
