"""The speed and memory modes a freshly loaded pipeline gets, in order: low VRAM, then the compiled path."""

from __future__ import annotations

from typing import Any

from pictale.engine.speed.options import SpeedOptions


def apply_speed(engine: Any, pipe: Any, options: SpeedOptions) -> tuple[list[str], dict]:
    """(start-up notes, report for /v1/server) after applying `options` to the engine's loaded `pipe`."""
    notes: list[str] = []
    report: dict = {}
    if options.low_vram:
        from pictale.engine.speed.low_vram import apply_low_vram

        more, info = apply_low_vram(engine, pipe)
        notes += more
        report.update(info)
    if options.compile:
        from pictale.engine.speed.compiled import compile_loaded

        more, info = compile_loaded(engine, pipe, options)
        notes += more
        report.update(info)
    return notes, report
