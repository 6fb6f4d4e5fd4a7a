"""An app whose models dir holds the tiny FLUX.1 folders (schnell, dev, Kontext) and a fake SD 1.5 folder, served
by a stand-in engine: the service and API layers of Flux are tested without a Flux engine. The stand-in records
every spec it is given and answers plain images of the spec's size."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.core.types import GenerationSpec, ModelEntry
from pictale.engine.families.flux.variant import folder_variant
from pictale.engine.run import EngineResult
from pictale.service.generation import GenerationService


class StandInEngine:
    """What the service asks of an engine: load, generate, and for Flux `family` and `flux_variant`."""

    batches_identically = False

    def __init__(self) -> None:
        self.entry: ModelEntry | None = None
        self.family: str | None = None
        self.flux_variant: str | None = None
        self.specs: list[GenerationSpec] = []

    def load(self, entry: ModelEntry) -> None:
        self.entry, self.family = entry, entry.family
        self.flux_variant = folder_variant(Path(entry.filename)) if entry.family == "flux" else None

    def generate(self, spec, prompts, negatives, seeds, subseeds, control=None, init_images=None, masks=None):
        self.specs.append(spec)
        images = [Image.new("RGB", (spec.width, spec.height), (200, 100, 50)) for _ in seeds]
        return EngineResult(images, list(seeds), list(subseeds))

    def generate_stream(self, items, admit, finish) -> None:
        """Continuous runs (engine.stepping): each request alone, no newcomers taken in."""
        for item in items:
            finish(item, self.generate(item.spec, item.prompts, item.negatives, item.seeds, item.subseeds))


def write_fake_sd15(folder: Path) -> Path:
    """Enough of a diffusers SD 1.5 folder for the scan (class name, UNet weights): never loaded."""
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0" * 4
    )
    return folder


def flux_models(root: Path) -> dict[str, Path]:
    """The three tiny Flux folders and the fake SD 1.5 one in `root/models/Stable-diffusion`."""
    from pictale.engine.tiny.flux import write_tiny_flux

    ckpts = root / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    found = {variant: write_tiny_flux(ckpts, variant)[0] for variant in ("schnell", "dev", "kontext")}
    found["sd15"] = write_fake_sd15(ckpts / "fake-sd15")
    return found


def flux_client(root: Path, model: str = "dev", **overrides) -> tuple[TestClient, StandInEngine, dict[str, Path]]:
    """A TestClient (not yet started) on the stand-in engine; the start-up model is `model`'s folder."""
    models = flux_models(root)
    settings = Settings(data_dir=root, model=str(models[model]), **overrides)
    engine = StandInEngine()
    return TestClient(create_app(settings, GenerationService(settings, engine=engine))), engine, models
