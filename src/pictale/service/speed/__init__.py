"""What the engine's speed and memory modes report at start-up (compile time and sizes, low-VRAM mode), read
without importing torch: lines for the banner and logs, a dict for `/v1/server`."""

from __future__ import annotations

from typing import Any


def speed_notes(svc: Any) -> list[str]:
    """One line per mode in effect (or refused, and why); empty when none was asked for."""
    engine = getattr(svc, "_engine", None)
    return list(getattr(engine, "speed_notes", None) or [])


def speed_info(svc: Any) -> dict[str, Any]:
    """`{"compiled": bool, "compile_seconds": float | None, "compile_sizes": ["512x512", ...], "low_vram": bool,
    "notes": [...]}` of the loaded model."""
    engine = getattr(svc, "_engine", None)
    report = getattr(engine, "speed_report", None)
    info = dict(report) if isinstance(report, dict) else {}
    info.setdefault("compiled", False)
    info.setdefault("compile_seconds", None)
    info.setdefault("compile_sizes", [])
    info.setdefault("low_vram", False)
    info["notes"] = speed_notes(svc)
    return info
