"""The tiny FLUX.1 builders: diffusers loads the saved folders offline and generates, seeded and repeatable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline

from pictale.engine.tiny.flux import build_tiny_flux, write_tiny_flux


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-flux")
    return {variant: write_tiny_flux(root, variant)[0] for variant in ("schnell", "dev")}


def _run(pipe, guidance: float, seed: int = 7) -> np.ndarray:
    out = pipe(
        "a red fox in the snow",
        num_inference_steps=2,
        guidance_scale=guidance,
        height=64,
        width=64,
        max_sequence_length=64,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return out.images[0]


def test_saved_folders_load_offline_in_the_diffusers_layout(folders):
    for variant, folder in folders.items():
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == "FluxPipeline"
        assert set(index) >= {"transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"}
        config = json.loads((folder / "transformer" / "config.json").read_text())
        assert config["guidance_embeds"] is (variant == "dev")
        assert config["in_channels"] == 64 and config["joint_attention_dim"] == 64
        assert not list(folder.rglob("*.bin"))  # safetensors only
        FluxPipeline.from_pretrained(folder, local_files_only=True)


def test_seeded_and_repeatable(folders):
    pipe = FluxPipeline.from_pretrained(folders["schnell"], local_files_only=True)
    first, again, other = _run(pipe, 0.0), _run(pipe, 0.0), _run(pipe, 0.0, seed=8)
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    # the same weights again from the builder: the files hold exactly what the builder made
    assert np.array_equal(first, _run(build_tiny_flux("schnell"), 0.0))


def test_schnell_ignores_guidance_and_dev_follows_it(folders):
    schnell = FluxPipeline.from_pretrained(folders["schnell"], local_files_only=True)
    assert np.array_equal(_run(schnell, 0.0), _run(schnell, 7.0))
    dev = FluxPipeline.from_pretrained(folders["dev"], local_files_only=True)
    assert not np.array_equal(_run(dev, 1.0), _run(dev, 7.0))


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant must be one of"):
        build_tiny_flux("pro")


@pytest.mark.parametrize(
    ("variant", "sampler", "label"),
    [
        ("schnell", "Euler", "Euler"),
        ("schnell", "Euler a", "Euler"),
        ("schnell", "Heun", "Euler"),  # FlowMatchHeun takes no sigmas: it never runs in a Flux pipeline
        ("schnell", "DPM++ 2M", "Euler"),  # given `mu` without dynamic shifting, DPM++ asserts
        ("schnell", "UniPC", "UniPC"),
        ("dev", "Euler", "Euler"),
        ("dev", "Heun", "Euler"),
        ("dev", "DPM++ 2M", "DPM++ 2M"),
        ("dev", "UniPC", "UniPC"),
    ],
)
def test_flow_samplers_that_run_in_flux_pipelines(folders, variant, sampler, label):
    """The A1111 sampler names map to flow schedulers that Flux's pipeline can drive (it always passes sigmas and
    mu); what cannot run there falls back to Euler, and the label says what ran."""
    from pictale.core.types import Mode
    from pictale.engine.families.flow_samplers import FLUX_PIPELINE_ARGS, make_flow_scheduler

    pipe = FluxPipeline.from_pretrained(folders[variant], local_files_only=True)
    scheduler, ran = make_flow_scheduler(dict(pipe.scheduler.config), sampler, Mode.TXT2IMG, FLUX_PIPELINE_ARGS)
    assert ran == label
    pipe.scheduler = scheduler
    image = _run(pipe, 3.5)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
