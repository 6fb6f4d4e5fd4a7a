"""Step-level continuous batching (engine.stepping): requests join a running batch between steps and leave when
their own steps are done, every image bit-identical to its request run alone (CPU, float32)."""

from __future__ import annotations

import numpy as np
import pytest

from pictale.core.errors import JobCancelled
from pictale.core.types import GenerationSpec
from pictale.engine.batching import BatchItem
from pictale.engine.engine import RunControl
from tests.engine.test_batching import LONG, _engine


@pytest.fixture(scope="module")
def sd15(tiny_models):
    return _engine(tiny_models, "sd15")


@pytest.fixture(scope="module")
def sdxl(tiny_models):
    return _engine(tiny_models, "sdxl")


def _item(prompt="a photo of a cat", negative="", seed=100, n=1, control=None, **spec_kw) -> BatchItem:
    kw = {"steps": 8, "width": 64, "height": 64, "sampler": "Euler", "cfg_scale": 7.0, **spec_kw}
    spec = GenerationSpec(prompt=prompt, negative_prompt=negative, batch_size=n, **kw)
    seeds = [seed + i for i in range(n)]
    return BatchItem(spec, [prompt] * n, [negative] * n, seeds, [0] * n, control or RunControl())


def _pixels(out) -> list[np.ndarray]:
    assert not isinstance(out, BaseException), out
    return [np.asarray(img) for img in out.images]


def _solo(engine, item: BatchItem) -> list[np.ndarray]:
    spec = item.spec
    return _pixels(engine.generate(spec, item.prompts, item.negatives, item.seeds, item.subseeds))


class Stream:
    """Runs `first` in the stepped loop; `arrivals[k]` joins after the loop's k-th UNet call."""

    def __init__(self, engine, first, arrivals=None):
        self.engine = engine
        self.first = first
        self.arrivals = dict(arrivals or {})
        self.calls: list[int] = []  # the batch size of every UNet call
        self.done: dict[int, tuple[int, object]] = {}  # id(item) -> (UNet calls made when it finished, outcome)

    def admit(self):
        return self.arrivals.pop(len(self.calls), [])

    def finish(self, item, outcome):
        self.done[id(item)] = (len(self.calls), outcome)

    def run(self):
        handle = self.engine._pipe.unet.register_forward_pre_hook(lambda _m, args: self.calls.append(args[0].shape[0]))
        try:
            self.engine.generate_stream(self.first, self.admit, self.finish)
        finally:
            handle.remove()
        return self

    def outcome(self, item):
        return self.done[id(item)][1]

    def finished_at(self, item) -> int:
        return self.done[id(item)][0]


@pytest.mark.parametrize(
    ("sampler", "schedule"), [("Euler", "automatic"), ("Euler a", "automatic"), ("DPM++ 2M", "karras")]
)
def test_a_request_joining_mid_run_gets_its_solo_pixels(sd15, sampler, schedule):
    a = _item(seed=11, sampler=sampler, scheduler=schedule)
    b = _item("a dog running", "blurry", seed=42, sampler=sampler, scheduler=schedule)
    run = Stream(sd15, [a], {3: [b]}).run()
    assert run.calls == [2] * 3 + [4] * 5 + [2] * 3  # b joined at a's step 3, ran its 8 steps, a left after 8
    assert run.finished_at(a) == 8 and run.finished_at(b) == 11
    for item in (a, b):
        for got, want in zip(_pixels(run.outcome(item)), _solo(sd15, item), strict=True):
            assert np.array_equal(got, want)


def test_a_shorter_request_leaves_early(sd15):
    a = _item(seed=5, steps=8)
    b = _item("a red chair", seed=6, steps=3, sampler="DPM++ 2M")
    run = Stream(sd15, [a, b]).run()
    assert run.calls == [4] * 3 + [2] * 5
    assert run.finished_at(b) == 3 < run.finished_at(a) == 8  # b was handed back while a still ran
    for item in (a, b):
        assert all(np.array_equal(g, w) for g, w in zip(_pixels(run.outcome(item)), _solo(sd15, item), strict=True))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_rows_differ_in_prompts_negatives_cfg_seeds_samplers_and_sizes(family, request):
    engine = request.getfixturevalue(family)
    items = [
        _item("a photo of a cat", "", seed=1, n=2, cfg_scale=7.0, steps=5),
        _item("an old man", "ugly, bad", seed=2, cfg_scale=3.5, steps=6, sampler="Euler a"),
        _item("a castle", "low quality", seed=3, cfg_scale=1.0, steps=4, sampler="DPM++ 2M", scheduler="karras"),
    ]
    run = Stream(engine, items[:2], {2: items[2:]}).run()
    assert run.calls[:2] == [6, 6] and run.calls[2] == 7  # the third has no CFG: one row
    for item in items:
        assert all(np.array_equal(g, w) for g, w in zip(_pixels(run.outcome(item)), _solo(engine, item), strict=True))


def _control(state: dict, **at) -> RunControl:
    def on_step(step, total, *_):
        state["step"] = step

    def flag(name):
        return lambda: at.get(name) is not None and state.get("step", 0) >= at[name]

    cleared = lambda: state.__setitem__("cleared", True)  # noqa: E731
    return RunControl(
        on_step=on_step,
        cancelled=flag("cancel"),
        interrupted=flag("interrupt"),
        skipped=flag("skip"),
        clear_skip=cleared,
    )


def test_cancelling_one_row_leaves_the_others_unchanged(sd15):
    state: dict = {}
    a, b = _item(seed=21), _item("a tree", seed=22, control=_control(state, cancel=2))
    c = _item("a castle", seed=23, steps=6)
    run = Stream(sd15, [a, b], {1: [c]}).run()
    assert isinstance(run.outcome(b), JobCancelled) and state["step"] == 2 and run.finished_at(b) == 3
    assert run.calls == [4, 6, 6, 4, 4, 4, 4, 2]  # b left after its 3rd step (the one that saw the cancel)
    for item in (a, c):
        assert all(np.array_equal(g, w) for g, w in zip(_pixels(run.outcome(item)), _solo(sd15, item), strict=True))


def test_interrupt_and_skip_end_only_their_own_row(sd15):
    si, ss = {}, {}
    a = _item(seed=31)
    b = _item("a dog", seed=32, control=_control(si, interrupt=2))
    c = _item("a cat", seed=33, control=_control(ss, skip=4))
    run = Stream(sd15, [a, b, c]).run()
    # As alone: the step that sees the flag is the last one, its latents are decoded.
    assert run.finished_at(b) == 3 and run.outcome(b).interrupted and "cleared" not in si
    assert run.finished_at(c) == 5 and not run.outcome(c).interrupted and ss["cleared"]
    assert run.finished_at(a) == 8 and not run.outcome(a).interrupted
    assert np.array_equal(_pixels(run.outcome(a))[0], _solo(sd15, a)[0])
    si.clear()
    alone = sd15.generate(b.spec, b.prompts, b.negatives, b.seeds, b.subseeds, b.control)
    assert alone.interrupted and np.array_equal(_pixels(run.outcome(b))[0], _pixels(alone)[0])


def test_embeddings_of_another_length_wait_inside_the_loop(sd15):
    a, b, c = _item(seed=41, steps=3), _item(LONG, seed=42, steps=3), _item("a tree", seed=43, steps=3)
    run = Stream(sd15, [a, b, c]).run()
    assert run.calls == [4] * 3 + [2] * 3  # the two short prompts together, then the long one
    for item in (a, b, c):
        assert all(np.array_equal(g, w) for g, w in zip(_pixels(run.outcome(item)), _solo(sd15, item), strict=True))


def test_previews_and_progress_per_row(sd15):
    seen: dict[int, list] = {0: [], 1: []}
    steps: dict[int, list] = {0: [], 1: []}
    items = []
    for k, n in ((0, 2), (1, 1)):
        control = RunControl(
            on_latents=lambda step, x, k=k: seen[k].append((step, tuple(x.shape))),
            on_step=lambda step, total, *_, k=k: steps[k].append((step, total)),
        )
        items.append(_item(seed=50 + k, n=n, steps=2 + k, control=control))
    Stream(sd15, items).run()
    assert seen[0] == [(1, (2, 4, 8, 8)), (2, (2, 4, 8, 8))] and steps[0] == [(1, 2), (2, 2)]
    assert seen[1] == [(1, (1, 4, 8, 8)), (2, (1, 4, 8, 8)), (3, (1, 4, 8, 8))] and steps[1][-1] == (3, 3)


def test_an_uncovered_sampler_goes_through_whole_batch_merging(sd15):
    items = [_item(seed=61, steps=3, sampler="Heun"), _item("a dog", seed=62, steps=3, sampler="Heun")]
    late = _item(seed=63, steps=3, sampler="Heun")
    run = Stream(sd15, items, {1: [late]}).run()
    assert id(late) not in run.done  # no newcomers: it waits for the next run
    assert set(run.calls) == {4}  # one merged pipeline call (Heun: two evaluations per step)
    for item in items:
        assert all(np.array_equal(g, w) for g, w in zip(_pixels(run.outcome(item)), _solo(sd15, item), strict=True))
