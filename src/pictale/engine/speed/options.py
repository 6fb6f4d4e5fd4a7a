"""What the settings ask of the engine's speed and memory modes (no torch here: the service builds it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pictale.core.sizes import parse_sizes


@dataclass(frozen=True)
class SpeedOptions:
    compile: bool = False
    sizes: tuple[tuple[int, int], ...] = ()
    """(width, height) compiled at load; empty: the model's default size."""
    lora_rank: int = 64
    lora_slots: int = 2
    backend: str = "inductor"
    low_vram: bool = False
    compile_kwargs: dict = field(default_factory=dict)
    """Extra torch.compile arguments (tests; e.g. {"fullgraph": True})."""
    warmup: Callable[[Any, str], dict] | None = None
    """(entry, family) -> {"size": (w, h), "sampler", "scheduler", "cfg_scale"}: how the service runs that model by
    default (its profile), for the warm-up; None: the family's default size, Euler, CFG 7."""

    @property
    def active(self) -> bool:
        return self.compile or self.low_vram


def speed_options(settings) -> SpeedOptions:
    """SpeedOptions from `Settings` (compile, compile_sizes, compile_lora_rank/slots, compile_backend, low_vram)."""
    sizes = tuple(parse_sizes(settings.compile_sizes)) if settings.compile_sizes else ()
    return SpeedOptions(
        compile=settings.compile,
        sizes=sizes,
        lora_rank=settings.compile_lora_rank,
        lora_slots=settings.compile_lora_slots,
        backend=settings.compile_backend,
        low_vram=settings.low_vram,
    )
