"""FLUX.1 training on 12-16 GB cards: the frozen base transformer stored in fp8 (layerwise casting), the LoRA in
fp32; it trains on the CPU too (tiny FLUX.1 dev)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pictale.engine.tiny.flux import build_tiny_flux
from pictale.training.loop import LoraTrainer
from pictale.training.runner import store_base_compactly
from pictale.training.spec import PreparedPhoto, TrainingSpec


def test_flux_base_in_fp8_trains_a_fp32_lora(tmp_path):
    torch.set_num_threads(1)
    photos = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        photos.append(PreparedPhoto(str(path), "kite_toy toy", f"{i}.png", 64, 64))
    spec = TrainingSpec(
        name="k", trigger="kite_toy", kind="object", base_model="tiny", family="flux", rank=4, alpha=4, steps=4,
        learning_rate=1e-3, resolution=64, extra={"base_quantization": "nf4"},
    )  # fmt: skip
    pipe = build_tiny_flux("dev")
    before = sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    assert store_base_compactly(pipe, spec) == "fp8"
    assert store_base_compactly(pipe, TrainingSpec(**{**spec.__dict__, "family": "sd15"})) is None
    trainer = LoraTrainer(pipe, spec, photos, tmp_path, device="cpu", dtype=torch.float32)
    trainer.prepare()
    losses = [loss for _, loss in trainer.step_chunk(4)]
    assert len(losses) == 4 and all(np.isfinite(losses))
    named = dict(pipe.transformer.named_parameters())
    base = sum(p.numel() * p.element_size() for n, p in named.items() if "lora" not in n)
    assert base < 0.5 * before  # most weights in one byte instead of four
    assert {p.dtype for n, p in named.items() if "lora" in n} == {torch.float32}
    assert any(p.dtype == torch.float8_e4m3fn for p in named.values())
