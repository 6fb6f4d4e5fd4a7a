"""The demo model's entries: the tiny SD 1.5 demo (`--model tiny`) and the tiny FLUX.1 models
(`--model tiny-flux-schnell`, `-dev`, `-kontext`), written on first use in the demo dir with their adapters."""

from __future__ import annotations

from pathlib import Path

from pictale.core.types import ModelEntry
from pictale.engine.demo.layout import DEMO_NAME, DEMO_SOURCE
from pictale.engine.hashes import HashCache
from pictale.engine.models import unet_weights


def demo_entry(demo_dir: Path, models_dir: Path | None = None) -> ModelEntry:
    """The demo model's entry (written on first use), named for what it is: random weights that draw noise.

    Demo files an earlier version left in `models_dir` are removed from there once the demo dir is complete.
    """
    from pictale.engine.demo.layout import migrate_legacy_demo
    from pictale.engine.tiny import ensure_tiny_model

    folder = ensure_tiny_model(demo_dir)
    if models_dir is not None:
        migrate_legacy_demo(Path(models_dir), Path(demo_dir))
    cache = HashCache(Path(demo_dir))
    sha = cache.sha256(unet_weights(folder))
    cache.save()
    return ModelEntry(f"{DEMO_NAME} [{sha[:10]}]", DEMO_NAME, str(folder.absolute()), DEMO_SOURCE, "sd15", sha)


def tiny_flux_entry(demo_dir: Path, name: str) -> ModelEntry:
    """`tiny-flux-schnell`, `tiny-flux-dev` or `tiny-flux-kontext`: a tiny seeded FLUX.1 written on first use in
    the demo dir (random weights: it draws noise), served like the demo, with the demo's adapters."""
    from pictale.engine.tiny.flux import TINY_FLUX_NAMES, write_tiny_flux

    variant = {v: k for k, v in TINY_FLUX_NAMES.items()}[name]
    folder = Path(demo_dir) / name
    if unet_weights(folder) is None or not (folder / "model_index.json").is_file():
        folder, _ = write_tiny_flux(Path(demo_dir), variant)
    if not (Path(demo_dir) / "ControlNet" / "flux-union" / "config.json").is_file():
        from pictale.engine.tiny.flux import build_tiny_flux
        from pictale.engine.tiny.flux_adapters import write_tiny_flux_adapters

        write_tiny_flux_adapters(Path(demo_dir), build_tiny_flux("dev"))  # face, style, pose and LoRAs to try
    cache = HashCache(Path(demo_dir))
    sha = cache.sha256(unet_weights(folder))
    cache.save()
    title = f"{name} (tiny random weights: draws noise)"
    return ModelEntry(f"{title} [{sha[:10]}]", name, str(folder.absolute()), DEMO_SOURCE, "flux", sha)


TINY_FLUX = ("tiny-flux-schnell", "tiny-flux-dev", "tiny-flux-kontext")
