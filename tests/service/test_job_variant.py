"""`service.families.job_variant`: whether a job runs on FLUX.1 Kontext, from the loaded engine or the files."""

from __future__ import annotations

import json
from types import SimpleNamespace

from pictale.core.errors import ModelNotFound
from pictale.core.types import GenerationSpec, ModelEntry
from pictale.service.families import job_variant


class Catalog:
    def __init__(self, *entries: ModelEntry) -> None:
        self.entries = {e.model_name: e for e in entries}

    def find(self, name: str) -> ModelEntry:
        if name not in self.entries:
            raise ModelNotFound(f"no model {name!r}")
        return self.entries[name]


def test_variant_from_the_loaded_engine_or_the_model_files(tmp_path):
    kontext = tmp_path / "kontext"
    kontext.mkdir()
    (kontext / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline"}))
    single = tmp_path / "flux1-kontext-dev.safetensors"
    single.write_bytes(b"")
    dev = tmp_path / "flux1-dev.safetensors"
    dev.write_bytes(b"")
    sd15 = ModelEntry("sd15", "sd15", str(tmp_path / "sd15"), "folder", "sd15")
    entries = [
        ModelEntry("k", "k", str(kontext), "folder", "flux"),
        ModelEntry("ks", "ks", str(single), "single_file", "flux"),
        ModelEntry("dev", "dev", str(dev), "single_file", "flux"),
        sd15,
    ]
    service = SimpleNamespace(
        catalog=Catalog(*entries),
        options={},
        current_model=sd15,
        engine=SimpleNamespace(family="sd15", flux_variant=None),
    )
    assert job_variant(service, GenerationSpec()) is None  # the loaded SD 1.5
    assert job_variant(service, GenerationSpec(model="k")) == "kontext"
    assert job_variant(service, GenerationSpec(model="ks")) == "kontext"  # Kontext files say so by name
    assert job_variant(service, GenerationSpec(model="dev")) is None  # dev's keys: not Kontext, not told here
    assert job_variant(service, GenerationSpec(model="nope")) is None
    service.current_model = entries[0]
    service.engine = SimpleNamespace(family="flux", flux_variant="kontext")
    assert job_variant(service, GenerationSpec()) == "kontext"
