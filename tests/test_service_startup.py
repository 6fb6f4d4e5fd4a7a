"""Start-up model choice: the tiny demo only when nothing else exists, said loudly, and named for what it is."""

from __future__ import annotations

import shutil

from pictale.core.config import Settings
from pictale.engine.demo.layout import DEMO_NAME
from pictale.service.generation import GenerationService

DEMO = "pictale-demo (tiny random weights: draws noise)"


def test_no_model_serves_the_demo_from_the_demo_dir_and_says_so(tmp_path):
    svc = GenerationService(Settings(data_dir=tmp_path))
    try:
        entry = svc.start()
        assert DEMO_NAME == DEMO
        assert (entry.model_name, entry.source, entry.title) == (DEMO, "tiny", f"{DEMO} [{entry.sha256[:10]}]")
        assert entry.filename == str(tmp_path / "demo" / "tiny-sd15")
        assert len(svc.startup_notes) == 1 and svc.startup_notes[0].startswith("NO MODEL FOUND")
        assert DEMO in svc.startup_notes[0]
        assert str(tmp_path / "models" / "Stable-diffusion") in svc.startup_notes[0]
        assert "pictale models pull" in svc.startup_notes[0]
        assert svc.options["sd_model_checkpoint"] == entry.title
        # nothing of the demo in the user's model folders: they stay for real weights
        models = tmp_path / "models"
        assert sorted(p.relative_to(models).as_posix() for p in models.rglob("*")) == ["Stable-diffusion"]
        assert sorted(p.name for p in (tmp_path / "demo").iterdir() if not p.name.startswith(".")) == [
            "ControlNet",
            "IP-Adapter",
            "Lora",
            "embeddings",
            "tiny-sd15",
        ]
        assert [e.title for e in svc.catalog.entries] == [entry.title]
    finally:
        svc.stop()


def test_explicit_tiny_is_quiet_and_any_real_model_in_the_dir_wins(tmp_path, tiny_models):
    svc = GenerationService(Settings(data_dir=tmp_path, model="tiny"))
    try:
        assert svc.start().model_name == DEMO and svc.startup_notes == []
    finally:
        svc.stop()
    other = tmp_path / "other"
    ckpts = other / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    # a real checkpoint whose name says "tiny" is a checkpoint like any other: it is served, not the demo
    shutil.copy(tiny_models["sd15_single"], ckpts / "tinyland-v2.safetensors")
    shutil.copytree(tiny_models["sd15_config"], ckpts / "tinyland-v2.config")
    svc = GenerationService(Settings(data_dir=other))
    try:
        entry = svc.start()
        assert (entry.model_name, entry.source) == ("tinyland-v2", "single_file") and svc.startup_notes == []
        assert not (other / "demo").exists()  # the demo is not even written
    finally:
        svc.stop()


def test_an_old_data_dir_gets_its_demo_files_moved_out_of_the_model_folders(tmp_path, tiny_models):
    """Earlier versions wrote the demo to models/Stable-diffusion/tiny-sd15 and its adapters to models/IP-Adapter,
    ControlNet, Lora and embeddings: they go (recognised by their shapes), a user's real file stays."""
    from pictale.engine.tiny import ensure_tiny_model

    models = tmp_path / "models"
    legacy = ensure_tiny_model(tmp_path / "old-layout")  # what the old version wrote, moved to the old places
    shutil.copytree(legacy, models / "Stable-diffusion" / "tiny-sd15")
    for sub in ("IP-Adapter", "ControlNet", "Lora", "embeddings"):
        shutil.copytree(legacy.parent / sub, models / sub)
    mine = models / "Lora" / "mine.safetensors"
    shutil.copy(tiny_models["lora_sdxl"], mine)
    shutil.copy(tiny_models["lora_sdxl"], models / "Lora" / "tiny_kohya.safetensors")  # same name, other shapes
    svc = GenerationService(Settings(data_dir=tmp_path))
    try:
        entry = svc.start()
        assert entry.model_name == DEMO and entry.filename == str(tmp_path / "demo" / "tiny-sd15")
        left = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file())
        assert left == ["Lora/mine.safetensors", "Lora/tiny_kohya.safetensors"]
        folders = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_dir())
        assert folders == ["ControlNet", "IP-Adapter", "Lora", "Stable-diffusion", "embeddings"]  # emptied, kept
        assert [e.model_name for e in svc.catalog.entries] == [DEMO]
    finally:
        svc.stop()
