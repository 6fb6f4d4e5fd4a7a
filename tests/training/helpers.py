"""Shared pieces of the training tests: tiny pipelines, photo files, specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pictale.engine.models import load_pipeline, resolve_model
from pictale.training.spec import PreparedPhoto, TrainingSpec

MODEL_KEYS = {"sd15": "sd15", "sdxl": "sdxl", "flux": "flux_dev"}


def load(tiny_models, family: str):
    """The tiny base of a family, loaded by the same code as a real checkpoint."""
    path = tiny_models[MODEL_KEYS[family]]
    return load_pipeline(resolve_model(str(path), Path(path).parent), device="cpu")


def noise_photos(folder: Path, count: int = 4, size: int = 64, caption: str = "photo of sks person") -> list:
    """Random-texture RGB PNGs (plumbing tests: nothing to learn but the data itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(count):
        rs = np.random.RandomState(100 + i)
        base = rs.rand(8, 8, 3)
        img = Image.fromarray((base * 255).astype("uint8")).resize((size, size), Image.BILINEAR)
        path = folder / f"p{i}.png"
        img.save(path)
        photos.append(
            PreparedPhoto(str(path), f"{caption}, {'indoors' if i % 2 else 'outdoors'}", f"p{i}.jpg", size, size)
        )
    return photos


def spec_for(tiny_models, family: str, **overrides) -> TrainingSpec:
    fields = {
        "name": "sasha",
        "trigger": "sks",
        "kind": "face",
        "base_model": str(tiny_models[MODEL_KEYS[family]]),
        "family": family,
        "rank": 4,
        "alpha": 2.0,  # alpha != rank: catches a file that reloads at the wrong strength (§2.2)
        "steps": 50,
        "learning_rate": 1e-2,
        "batch_size": 1,
        "seed": 7,
    }
    fields.update(overrides)
    return TrainingSpec(**fields)
