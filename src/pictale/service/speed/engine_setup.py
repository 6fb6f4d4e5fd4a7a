"""The worker's engine, built from the settings (lazily: torch is imported on first use, not with the API)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pictale.core.config import Settings
from pictale.core.types import ModelEntry
from pictale.service.profiles import default_size, profile_for


def make_engine(settings: Settings) -> Any:
    """An Engine with the configured device, dtype, adapter folders, T5 limit, FLUX.1 files and speed modes."""
    from pictale.engine.engine import Engine
    from pictale.engine.families.flux.files import flux_options
    from pictale.engine.speed import speed_options

    def warmup(entry: ModelEntry, family: str) -> dict[str, Any]:
        """How the compiled path warms a model up: its profile's size, sampler and CFG (a few steps)."""
        profile = profile_for(settings, entry)
        side = default_size(profile, family)
        return {"size": (side, side), "sampler": profile.sampler, "scheduler": profile.scheduler,
                "cfg_scale": profile.cfg_scale}  # fmt: skip

    return Engine(
        device=settings.device,
        dtype=settings.dtype,
        ip_adapter_path=settings.ip_adapter_path,
        controlnet_path=settings.controlnet_path,
        t5_max_tokens=settings.t5_max_tokens,
        flux=flux_options(settings),
        speed=replace(speed_options(settings), warmup=warmup),
    )
