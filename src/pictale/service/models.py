"""Checkpoints the server knows about, and the A1111 options store that names the current one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pictale.core.config import Settings
from pictale.core.errors import CheckpointUnloadable, ModelLoadError, ModelNotFound
from pictale.core.types import ModelEntry

log = logging.getLogger(__name__)


class ModelCatalog:
    """The models dir scan plus the model given on the command line (which may live elsewhere)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: list[ModelEntry] = []
        self._extra: list[ModelEntry] = []
        self.skipped: dict[str, str] = {}
        """Files in the models dir that look like checkpoints but cannot load: {relative name: why}."""

    @property
    def directory(self) -> Path:
        return self.settings.checkpoints_path

    def migrate_legacy_demo(self) -> None:
        """Data dirs of earlier versions keep the demo among the checkpoints and its adapters in the user's
        folders: move it to the demo dir before the first scan, so it is never listed or served as a checkpoint."""
        from pictale.engine.demo.entries import demo_entry

        if (self.directory / "tiny-sd15" / "model_index.json").is_file():
            demo_entry(self.settings.demo_path, self.settings.models_path)

    def demo(self) -> ModelEntry:
        """The demo model (written on first use in `DATA_DIR/demo/`), remembered so lists show it."""
        from pictale.engine.demo.entries import demo_entry

        entry = demo_entry(self.settings.demo_path, self.settings.models_path)
        self.remember(entry)
        return entry

    def refresh(self) -> list[ModelEntry]:
        from pictale.engine import models  # lazy: the ML stack stays out of API import time

        self.directory.mkdir(parents=True, exist_ok=True)
        skipped: dict[str, str] = {}
        self._entries = models.scan_checkpoints(self.directory, skipped)
        self.skipped = skipped
        return self.entries

    @property
    def entries(self) -> list[ModelEntry]:
        seen = {e.filename for e in self._entries}
        return self._entries + [e for e in self._extra if e.filename not in seen]

    def remember(self, entry: ModelEntry) -> None:
        if all(e.filename != entry.filename for e in self.entries):
            self._extra.append(entry)

    def refuse_unloadable(self, name: str) -> None:
        """CheckpointUnloadable (422) when `name` is a file of the models dir that was skipped: it cannot load."""
        bare = name.strip().split(" [", 1)[0]
        for rel, why in self.skipped.items():
            stem = str(Path(rel).with_suffix("")) if rel.endswith(".safetensors") else rel
            if bare in (rel, stem, Path(rel).name, Path(stem).name, stem.replace("/", "_")):
                raise CheckpointUnloadable(unloadable_message(rel, why), param="sd_model_checkpoint")

    def find(self, name: str) -> ModelEntry:
        """Match an A1111 title, a model name, a file name or a hash prefix; else resolve a path or hub id."""
        wanted = name.strip()
        for entry in self.entries:
            if wanted in (entry.title, entry.model_name, entry.filename, Path(entry.filename).name):
                return entry
        for entry in self.entries:
            if entry.sha256 and len(wanted) >= 8 and entry.sha256.startswith(wanted.lower()):
                return entry
        # A title whose hash part changed ("name [abc]") still names the model.
        bare = wanted.split(" [", 1)[0]
        for entry in self.entries:
            if bare in (entry.model_name, Path(entry.filename).name):
                return entry
        self.refuse_unloadable(wanted)
        from pictale.engine import models

        try:
            entry = models.resolve_model(wanted, self.settings.models_path, self.settings.demo_path)
        except ModelLoadError as exc:  # a path to a file that is no checkpoint pictale can load
            raise CheckpointUnloadable(unloadable_message(wanted, exc.message), param="sd_model_checkpoint") from None
        except ModelNotFound:
            raise ModelNotFound(
                f"model {wanted!r} not found; known models: {[e.title for e in self.entries]}", param="model"
            ) from None
        self.remember(entry)
        return entry


def unloadable_message(name: str, why: str) -> str:
    """The 422 of a checkpoint that cannot load: its name, why, and that the current model still serves."""
    return f"checkpoint {name!r} cannot be loaded: {why}; the current model stays loaded"


A1111_OPTION_DEFAULTS: dict[str, Any] = {
    "samples_save": True,
    "samples_format": "png",
    "save_images_add_number": True,
    "jpeg_quality": 80,
    "webp_lossless": False,
    "enable_pnginfo": True,
    "save_txt": False,
    "outdir_samples": "",
    "sd_model_checkpoint": None,
    "sd_checkpoint_hash": None,
    "sd_vae": "Automatic",
    "sd_vae_as_default": True,
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
    "randn_source": "CPU",
    "show_progress_every_n_steps": 10,
    "live_previews_enable": True,
    "img2img_fix_steps": False,
    "initial_noise_multiplier": 1.0,
    "extra_networks_default_multiplier": 1.0,
    "sd_checkpoints_limit": 1,
    "sd_checkpoint_cache": 0,
    "emphasis": "Original",
    "comma_padding_backtrack": 20,
    "tiling": False,
    "face_restoration": False,
    "face_restoration_model": None,
    "return_grid": False,
    "upscaler_for_img2img": None,
    "api_enable_requests": False,
    "api_forbid_local_requests": True,
}
"""`GET /sdapi/v1/options` besides the live model keys. No `forge_preset`: SillyTavern keys on it."""
