"""Trainer state on disk without pickle: tensors in `trainer_state.safetensors`, the rest in `trainer_state.json`.

A resume point holds the LoRA weights, the optimiser state (its tensors, plus its param groups in JSON), the
generator state (a uint8 tensor), the epoch's batch order and position, and the step (training.md §1.7).
`checkpoint-<step>/` folders (state + the kohya file, ready to register) are written to a temporary name and
renamed, so a crash never leaves a half checkpoint; the JSON names the safetensors file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TENSORS = "trainer_state.safetensors"
META = "trainer_state.json"
LORA_FILE = "lora.safetensors"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser `state_dict()` as (tensors keyed `optimizer.<param>.<name>`, JSON-able rest)."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_state(folder: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write both files into folder (created); the JSON last, naming the tensors file's hash."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (TENSORS + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, folder / TENSORS)
    meta = {**meta, "tensors_sha256": _sha256(folder / TENSORS)}
    tmp = folder / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / META)


def read_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) from a folder written by `write_state`; ValueError when incomplete or corrupt."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: no readable {META} ({exc})") from exc
    if _sha256(folder / TENSORS) != meta.get("tensors_sha256"):
        raise ValueError(f"{folder}: {TENSORS} does not match its {META}")
    return load_file(str(folder / TENSORS)), meta


def write_checkpoint(trainer, root: Path, *, metadata: dict | None = None) -> Path:
    """`root/checkpoint-<step>/`: trainer state + the kohya LoRA (`lora.safetensors`), renamed into place."""
    from pictale.training.export import save_kohya

    root = Path(root)
    final = root / f"checkpoint-{trainer.step:06d}"
    tmp = root / f".checkpoint-{trainer.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_state(tmp)
    save_kohya(trainer, tmp / LORA_FILE, metadata or {})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under root, oldest first."""
    found = []
    for p in Path(root).glob("checkpoint-*"):
        if (m := _CHECKPOINT.match(p.name)) and (p / META).is_file() and (p / LORA_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (the resume point after a crash), or None."""
    found = checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: Path, keep: int, protect: tuple[int, ...] = ()) -> list[int]:
    """Keep the newest `keep` checkpoints and the steps in `protect` (the best-scored); delete the rest. Deleted
    steps, oldest first."""
    found = checkpoints(root)
    newest = {s for s, _ in found[-keep:]} if keep > 0 else set()
    deleted = []
    for step, path in found:
        if step not in newest and step not in protect:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(step)
    return deleted
