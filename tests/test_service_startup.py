"""Start-up model choice: the tiny demo when nothing is configured, said loudly."""

from __future__ import annotations

import shutil

from pictale.core.config import Settings
from pictale.service.generation import GenerationService


def test_no_model_serves_tiny_and_says_so(tmp_path):
    svc = GenerationService(Settings(data_dir=tmp_path))
    try:
        entry = svc.start()
        assert "tiny" in entry.model_name
        assert svc.startup_notes and "NO MODEL FOUND" in svc.startup_notes[0]
        assert str(tmp_path / "models" / "Stable-diffusion") in svc.startup_notes[0]
        assert "pictale models pull" in svc.startup_notes[0]
        assert svc.options["sd_model_checkpoint"] == entry.title
    finally:
        svc.stop()


def test_explicit_tiny_is_quiet_and_a_real_model_in_the_dir_wins(tmp_path, tiny_models):
    svc = GenerationService(Settings(data_dir=tmp_path, model="tiny"))
    try:
        assert "tiny" in svc.start().model_name and svc.startup_notes == []
    finally:
        svc.stop()
    other = tmp_path / "other"
    ckpts = other / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(tiny_models["sd15_single"], ckpts / "mymodel.safetensors")
    shutil.copytree(tiny_models["sd15_config"], ckpts / "mymodel.config")
    svc = GenerationService(Settings(data_dir=other))
    try:
        assert svc.start().model_name == "mymodel" and svc.startup_notes == []
    finally:
        svc.stop()
