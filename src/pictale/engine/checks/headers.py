"""safetensors headers: tensor names, dtypes and shapes read from the JSON header only (no torch, no tensor data),
and whether the file holds all the bytes its header describes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from pictale.core.errors import ModelLoadError

_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor name -> {dtype, shape, data_offsets}, read from the JSON header only (no tensor data)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError("file shorter than a safetensors header")
            (size,) = struct.unpack("<Q", prefix)
            if size > _MAX_HEADER_BYTES:
                raise ValueError(f"header of {size} bytes is implausibly large")
            raw = f.read(size)
        if len(raw) < size:
            raise ValueError("truncated header")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{Path(path).name}: not a readable .safetensors file ({exc})") from exc
    header.pop("__metadata__", None)
    return header


def check_complete(path: Path, header: dict[str, Any]) -> None:
    """ModelLoadError when the file is shorter than its header says (a download or copy cut short)."""
    ends = [v["data_offsets"][1] for v in header.values() if isinstance(v, dict) and "data_offsets" in v]
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
    wanted, have = 8 + size + max(ends, default=0), Path(path).stat().st_size
    if have < wanted:
        raise ModelLoadError(f"{Path(path).name}: truncated: {have} bytes, its header describes {wanted}")
