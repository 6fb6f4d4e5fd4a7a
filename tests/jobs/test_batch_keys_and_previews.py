"""What the service tells the queue: which generations may share a batch, and when a job makes previews."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pictale.core.types import AvatarKind, AvatarRef, GenerationSpec, HiresSpec
from pictale.jobs.queue import Job
from pictale.service.batching import batch_key
from pictale.service.previews import preview_every, request_previews

BASE = GenerationSpec(prompt="a cat", negative_prompt="", seed=1, steps=4, width=64, height=64)


def _lora(weight: float) -> AvatarRef:
    return AvatarRef(AvatarKind.LORA, "toy", weight, (Path("toy.safetensors"),), digest="d-toy")


def test_requests_differing_only_in_prompts_seeds_and_counts_share_a_key():
    key = batch_key(BASE)
    assert key is not None
    assert batch_key(replace(BASE, prompt="a dog", seed=7, batch_size=3)) == key
    assert batch_key(replace(BASE, negative_prompt="blurry", styles=("x",))) == key


def test_anything_else_that_differs_separates_them():
    changes = [
        {"steps": 5},
        {"cfg_scale": 5.0},
        {"width": 72},
        {"sampler": "Euler a"},
        {"scheduler": "karras"},
        {"clip_skip": 2},
        {"tiling": True},
        {"model": "other"},
        {"avatars": (_lora(0.5),)},
    ]
    keys = {batch_key(replace(BASE, **change)) for change in changes}
    assert len(keys) == len(changes) and batch_key(BASE) not in keys
    assert batch_key(replace(BASE, avatars=(_lora(0.5),))) != batch_key(replace(BASE, avatars=(_lora(0.7),)))


def test_some_requests_always_run_alone():
    alone = [
        {"hires": HiresSpec()},
        {"subseed_strength": 0.3},
        {"n_iter": 2},
        {"sampler": "DPM++ SDE"},  # its noise is seeded once per call, not per image
        {"init_images": (object(),)},  # img2img
    ]
    for change in alone:
        assert batch_key(replace(BASE, **change)) is None, change


def test_previews_only_for_those_who_asked():
    options = {"live_previews_enable": True, "show_progress_every_n_steps": 10}
    job = Job(work=lambda job: None)
    assert preview_every(job, 5, options) == 0
    job.meta["previews"] = True
    assert preview_every(job, 5, options) == 5
    job.meta["previews"] = 2  # a stream that wants them more often
    assert preview_every(job, 5, options) == 2
    a1111 = Job(work=lambda job: None)
    request_previews(a1111)  # an A1111 client polls /progress
    assert preview_every(a1111, 5, options) == 10
    assert preview_every(a1111, 5, {**options, "live_previews_enable": False}) == 0
    assert preview_every(Job(work=lambda job: None, meta={"previews": True}), 0, options) == 0  # preview_every 0
