"""Step-level continuous batching on the flow-matching families (engine.stepping.flow): SD3 and FLUX.1 requests
join a running batch between steps and leave when their own steps are done, every image bit-identical to its
request run alone (CPU, float32)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pictale.core.errors import JobCancelled
from pictale.core.types import GenerationSpec
from pictale.engine import models
from pictale.engine.batching import BatchItem
from pictale.engine.engine import Engine, RunControl
from tests.engine.test_continuous import Stream, _control, _pixels


def _load(tiny_models, name: str) -> Engine:
    engine = Engine(device="cpu", dtype="float32", t5_max_tokens=256)
    engine.load(models.resolve_model(str(tiny_models[name]), tiny_models[name].parent))
    return engine


@pytest.fixture(scope="module")
def engines(tiny_models):
    return {name: _load(tiny_models, name) for name in ("sd3", "flux_schnell", "flux_dev")}


def _item(prompt="a photo of a cat", negative="", seed=100, n=1, control=None, **spec_kw) -> BatchItem:
    kw = {"steps": 6, "width": 64, "height": 64, "sampler": "Euler", "cfg_scale": 1.0, **spec_kw}
    spec = GenerationSpec(prompt=prompt, negative_prompt=negative, batch_size=n, **kw)
    seeds = [seed + i for i in range(n)]
    return BatchItem(spec, [prompt] * n, [negative] * n, seeds, [0] * n, control or RunControl())


class FlowStream(Stream):
    """`Stream` counting the rows of every transformer call."""

    def run(self):
        transformer = self.engine._pipe.transformer
        handle = transformer.register_forward_pre_hook(
            lambda _m, args, kwargs: self.calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
        )
        try:
            self.engine.generate_stream(self.first, self.admit, self.finish)
        finally:
            handle.remove()
        return self


def _as_alone(engine, run: FlowStream, items: list[BatchItem]) -> None:
    for item in items:
        spec = item.spec
        alone = engine.generate(spec, item.prompts, item.negatives, item.seeds, item.subseeds)
        got = run.outcome(item)
        assert not isinstance(got, BaseException), got
        assert len(got.images) == len(alone.images)
        for g, w in zip(_pixels(got), _pixels(alone), strict=True):
            assert np.array_equal(g, w)
        assert got.infotext == alone.infotext  # the sampler that ran, T5 tokens, notes


@pytest.mark.parametrize(
    ("name", "fields", "rows"),
    [
        ("sd3", {"cfg_scale": 5.0}, 2),  # true CFG: negative and positive rows in one call
        ("flux_schnell", {}, 1),
        ("flux_dev", {"distilled_cfg_scale": 3.5}, 1),
    ],
)
def test_a_request_joining_mid_run_gets_its_solo_pixels(engines, name, fields, rows):
    engine = engines[name]
    a = _item(seed=11, **fields)
    b = _item("a dog running", "blurry", seed=42, sampler="Euler a", **fields)  # Euler a runs flow Euler here
    run = FlowStream(engine, [a], {2: [b]}).run()
    assert run.calls == [rows] * 2 + [2 * rows] * 4 + [rows] * 2  # b joined after a's 2nd step, a left after 6
    assert run.finished_at(a) == 6 and run.finished_at(b) == 8
    _as_alone(engine, run, [a, b])
    assert run.outcome(b).infotext["Sampler"] == "Euler" and "Sampler note" in run.outcome(b).infotext


def test_a_shorter_request_leaves_early(engines):
    engine = engines["flux_schnell"]
    a, b = _item(seed=5, steps=6), _item("a red chair", seed=6, steps=2)
    run = FlowStream(engine, [a, b]).run()
    assert run.calls == [2] * 2 + [1] * 4
    assert run.finished_at(b) == 2 < run.finished_at(a) == 6  # b was handed back while a still ran
    _as_alone(engine, run, [a, b])


def test_flux_dev_rows_differ_in_prompts_seeds_guidance_true_cfg_and_steps(engines):
    engine = engines["flux_dev"]
    items = [
        _item("a photo of a cat", seed=1, n=2, distilled_cfg_scale=1.0, steps=4),
        _item("an old man", "ugly, bad", seed=2, distilled_cfg_scale=7.0, cfg_scale=3.0, steps=5),  # true CFG
        _item("a castle", "ignored", seed=3, steps=3),  # the default guidance; CFG 1: the negative is unused
    ]
    run = FlowStream(engine, items[:2], {1: items[2:]}).run()
    assert run.calls[:2] == [4, 5]  # the true-CFG request takes a negative row too
    _as_alone(engine, run, items)


def test_sd3_rows_differ_in_prompts_negatives_cfg_seeds_and_steps(engines):
    engine = engines["sd3"]
    items = [
        _item("a photo of a cat", "", seed=1, n=2, cfg_scale=7.0, steps=5),
        _item("an old man", "ugly, bad", seed=2, cfg_scale=3.5, steps=6),
        _item("a castle", "low quality", seed=3, cfg_scale=1.0, steps=4),  # no CFG: one row
    ]
    run = FlowStream(engine, items[:2], {2: items[2:]}).run()
    assert run.calls[:2] == [6, 6] and run.calls[2] == 7
    _as_alone(engine, run, items)


@pytest.mark.parametrize("name", ["sd3", "flux_dev"])
def test_cancelling_one_row_leaves_the_others_unchanged(engines, name):
    engine = engines[name]
    state: dict = {}
    a, b = _item(seed=21), _item("a tree", seed=22, control=_control(state, cancel=2))
    c = _item("a castle", seed=23, steps=4)
    run = FlowStream(engine, [a, b], {1: [c]}).run()
    assert isinstance(run.outcome(b), JobCancelled) and state["step"] == 2 and run.finished_at(b) == 3
    assert run.calls == [2, 3, 3, 2, 2, 1]  # b left after its 3rd step (the one that saw the cancel)
    _as_alone(engine, run, [a, c])


def test_interrupt_decodes_what_the_row_has_as_alone(engines):
    engine = engines["flux_schnell"]
    si: dict = {}
    a, b = _item(seed=31), _item("a dog", seed=32, control=_control(si, interrupt=2))
    run = FlowStream(engine, [a, b]).run()
    assert run.finished_at(b) == 3 and run.outcome(b).interrupted and run.finished_at(a) == 6
    si.clear()
    alone = engine.generate(b.spec, b.prompts, b.negatives, b.seeds, b.subseeds, b.control)
    assert alone.interrupted and np.array_equal(_pixels(run.outcome(b))[0], _pixels(alone)[0])


def test_another_t5_length_waits_inside_the_loop(engines):
    engine = engines["flux_schnell"]
    long = " ".join(["a photo of a cat on a red chair"] * 6)  # more T5 tokens than the job's 32: it runs at 256
    a, b, c = (_item(p, seed=s, steps=2, t5_tokens=32) for p, s in (("a cat", 41), (long, 42), ("a tree", 43)))
    run = FlowStream(engine, [a, b, c]).run()
    assert run.calls == [2, 2, 1, 1]  # the two short prompts together, then the long one
    assert run.outcome(b).infotext["T5 tokens"].endswith("/256")
    _as_alone(engine, run, [a, b, c])


def test_a_sampler_the_loop_does_not_step_waits_and_runs_merged(engines):
    engine = engines["sd3"]  # DPM++ 2M is a flow DPM solver on SD3, not flow Euler
    a, late = _item(seed=51, steps=3), _item("a dog", seed=52, steps=3, sampler="DPM++ 2M")
    run = FlowStream(engine, [a], {1: [late]}).run()
    assert run.calls[:3] == [1, 1, 1] and run.finished_at(late) > run.finished_at(a)
    _as_alone(engine, run, [a, late])
    merged = FlowStream(engine, [_item(seed=53, steps=2, sampler="DPM++ 2M")]).run()
    assert merged.calls == [1, 1]


def test_flux_requests_share_a_continuous_run_through_the_service(tiny_models, tmp_path):
    from fastapi.testclient import TestClient

    from pictale.api.app import create_app
    from pictale.core.config import Settings

    settings = Settings(data_dir=tmp_path, model=str(tiny_models["flux_dev"]))
    specs = [
        GenerationSpec(prompt="a photo of a cat", steps=30, width=64, height=64, seed=1, cfg_scale=1.0),
        GenerationSpec(prompt="a dog", steps=4, width=64, height=64, seed=2, cfg_scale=1.0, distilled_cfg_scale=6.0),
        GenerationSpec(prompt="a tree", negative_prompt="blurry", steps=5, width=64, height=64, seed=3, cfg_scale=3.0),
    ]
    rows: list[int] = []
    with TestClient(create_app(settings)) as client:
        svc = client.app.state.service
        transformer = svc.engine._pipe.transformer
        handle = transformer.register_forward_pre_hook(
            lambda _m, args, kwargs: rows.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
        )
        try:
            first = svc.submit(specs[0])
            while first.progress.step < 2:
                time.sleep(0.001)
            later = [svc.submit(spec) for spec in specs[1:]]
            results = [job.future.result(60) for job in (first, *later)]
        finally:
            handle.remove()
        assert first._regroups == 0 and [e.type for e in first.events.snapshot()].count("started") == 1
        assert max(rows) > 1 and len(rows) < 30 + 4 + 5  # they shared transformer calls, nothing was redone
        for job in later:
            assert first.started < job.started < job.finished < first.finished  # joined mid-run, left before it
        alone = [svc.generate(spec) for spec in specs]
    for got, want in zip(results, alone, strict=True):
        assert got.images == want.images and got.infotexts == want.infotexts  # PNG bytes too


def test_stream_keys_let_distilled_guidance_differ_but_not_the_t5_length():
    from pictale.service.batching import stream_key

    base = GenerationSpec(prompt="a cat", steps=4, width=64, height=64, t5_tokens=256)
    other = GenerationSpec(prompt="a dog", steps=9, width=64, height=64, t5_tokens=256, distilled_cfg_scale=6.0)
    assert stream_key(base) is not None and stream_key(base) == stream_key(other)
    assert stream_key(base) != stream_key(GenerationSpec(prompt="a cat", width=64, height=64, t5_tokens=512))
