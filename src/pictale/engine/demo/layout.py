"""Where the demo lives (`DATA_DIR/demo/`, apart from the user's model folders) and what API clients call it.

    DATA_DIR/demo/tiny-sd15/     the demo model (a diffusers folder written by `engine.tiny.ensure_tiny_model`)
    DATA_DIR/demo/IP-Adapter/    its tiny IP-Adapter, ControlNet/ its tiny OpenPose ControlNet,
    DATA_DIR/demo/Lora/          Lora/ and embeddings/ its tiny LoRA and embedding files, tiny-clip/ its scorer

The engine takes adapters from here only while the demo is loaded (`adapter_roots`); with any other model it
uses the user's folders. Pure Python: no torch.

Data dirs of earlier versions have the demo in `models/Stable-diffusion/tiny-sd15/` and its adapters in the
user's `models/IP-Adapter/`, `models/ControlNet/`, `models/Lora/` and `models/embeddings/`, where they were
listed as a checkpoint and used with real models. `migrate_legacy_demo` moves those files to the demo dir,
each recognised by what it is (the tensor shapes and configs the tiny builders write), never by its name
alone.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from pictale.core.errors import PictaleError
from pictale.core.types import ModelEntry

log = logging.getLogger(__name__)

DEMO_NAME = "pictale-demo (tiny random weights: draws noise)"
"""What the demo is called everywhere a client sees a model name: sd-models, options, infotext, /v1/models."""
DEMO_SOURCE = "tiny"
"""`ModelEntry.source` of the demo model (resolved from `--model tiny` or as the no-model fallback)."""
DEMO_FOLDER = "tiny-sd15"
ADAPTER_DIRS = ("IP-Adapter", "ControlNet", "Lora", "embeddings")


def is_demo(entry: ModelEntry | None) -> bool:
    """True for the demo model: by where it came from (`resolve_model("tiny")`), never by its name."""
    return entry is not None and entry.source == DEMO_SOURCE


TINY_CROSS_ATTENTION = 64
"""UNets this narrow are pictale's tiny seeded models (real ones start at 768)."""


def is_tiny(entry: ModelEntry | None) -> bool:
    """The demo, or a model the tiny builders made (`pictale models make-tiny`), told by its UNet's or
    transformer's text width (real ones start at 768)."""
    if entry is None or is_demo(entry):
        return entry is not None
    path = Path(entry.filename)
    folder = path if path.is_dir() else path.with_suffix(".config")
    for config, key in (("unet", "cross_attention_dim"), ("transformer", "joint_attention_dim")):
        try:
            width = json.loads((folder / config / "config.json").read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        return isinstance(width, int) and width <= TINY_CROSS_ATTENTION
    return False


def adapter_roots(entry: ModelEntry | None, ip_adapter_path: Path | None, controlnet_path: Path | None):
    """(IP-Adapter root, ControlNet root) for jobs on `entry`: the demo's own beside it, else the user's."""
    if is_demo(entry):
        demo_dir = Path(entry.filename).parent
        return demo_dir / "IP-Adapter", demo_dir / "ControlNet"
    return ip_adapter_path, controlnet_path


_VERSION_KEYS = ("_diffusers_version", "transformers_version", "_name_or_path")


def _fingerprint(path: Path) -> object:
    """What makes a demo file what it is: tensor names and shapes, or a config without library versions."""
    if path.suffix == ".safetensors":
        from pictale.engine.models import read_safetensors_header

        return {k: v.get("shape") for k, v in read_safetensors_header(path).items()}
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: v for k, v in data.items() if k not in _VERSION_KEYS} if isinstance(data, dict) else data
    return None  # tokenizer files and the like: the configs and tensors decide


def _same_kind(legacy: Path, ours: Path) -> bool:
    """Legacy file or folder made by the tiny builders exactly like ours (an older version's bytes may differ)."""
    if legacy.is_file() and ours.is_file():
        return legacy.suffix == ours.suffix and _fingerprint(legacy) == _fingerprint(ours)
    if not (legacy.is_dir() and ours.is_dir()):
        return False
    names = _described(ours)
    return bool(names) and names == _described(legacy) and all(_same_kind(legacy / n, ours / n) for n in names)


def _described(folder: Path) -> list[Path]:
    return sorted(
        p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")
    )


def migrate_legacy_demo(models_dir: Path, demo_dir: Path) -> list[Path]:
    """Remove from the user's model folders the demo files an earlier version put there; returns what went.

    Only files with exactly the demo's tensor shapes and configs (written in `demo_dir` first) are removed, so a
    user's file that happens to share a name stays. Called after the demo dir is complete.
    """
    models_dir, demo_dir = Path(models_dir), Path(demo_dir)
    pairs = [(models_dir / "Stable-diffusion" / DEMO_FOLDER, demo_dir / DEMO_FOLDER)]
    for sub in ADAPTER_DIRS:
        ours = demo_dir / sub
        if ours.is_dir():
            pairs += [(models_dir / sub / p.relative_to(ours), p) for p in sorted(ours.rglob("*")) if p.is_file()]
    removed = []
    for legacy, ours in pairs:
        try:
            if legacy.exists() and _same_kind(legacy, ours):
                shutil.rmtree(legacy) if legacy.is_dir() else legacy.unlink()
                removed.append(legacy)
        except (OSError, ValueError, PictaleError) as exc:  # read-only or shared: the fit check still guards
            log.warning("could not remove the old demo file %s: %s", legacy, exc)
    for path in removed:
        _prune_empty(path.parent, models_dir)
    if removed:
        log.info("moved the demo's files out of %s (now in %s): %d removed", models_dir, demo_dir, len(removed))
    return removed


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder.parent != stop and folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
