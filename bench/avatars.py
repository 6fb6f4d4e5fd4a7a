"""The cost of avatars: a stream alternating among 4 LoRA avatars and 2 face avatars vs. the same stream
without avatars (same prompts, seeds and sizes), through a live `pictale serve`, in one run.

Prints, per model, the warm ratio avatars/plain (median of per-request ratios, requests interleaved so machine
noise hits both streams alike), the same ratio of the server process's CPU time (Linux; less swayed by other
processes sharing the cores) and the cost of the first use of each avatar vs. its later uses. Rows:

- tiny SD 1.5: 4 LoRAs derived from the tiny peft LoRA, 2 face avatars through the SD 1.5 IP-Adapter;
- tiny FLUX.1 schnell and tiny FLUX.1 dev: 4 Flux LoRAs derived from the tiny Flux peft LoRA (three) and the
  tiny kohya one (one, so formats mix), 2 face avatars through the XLabs Flux IP-Adapter (the server gets
  `PICTALE_IP_ADAPTER_DIR` = the tiny models' IP-Adapter root), every request with `cfg_scale: 1` (one
  transformer pass per step; dev keeps its default distilled guidance 3.5).

    .venv/bin/python bench/avatars.py [--rounds 4] [--size 128] [--steps 4] [--families sd15,flux]

`--families` takes sd15, flux (both Flux rows), flux_schnell, flux_dev.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from live_server import start_server
from pictale.engine.tiny import write_tiny_models

# LoRA tensors the variants scale: the up/B matrices of every format (peft, kohya, XLabs), never the downs.
_UP_SUFFIXES = (".lora_B.weight", ".lora_up.weight", ".up.weight")


@dataclass(frozen=True)
class Row:
    label: str
    model: str  # key of write_tiny_models
    loras: tuple[str, ...]  # key of write_tiny_models for each of the 4 LoRA avatars
    body: dict = field(default_factory=dict)  # extra txt2img fields
    env: tuple[str, ...] = ()  # PICTALE_* settings pointing at a write_tiny_models key


FLUX_LORAS = ("lora_flux_peft", "lora_flux_peft", "lora_flux_peft", "lora_flux_kohya")
ROWS = {
    "sd15": Row("tiny SD 1.5", "sd15", ("lora_peft",) * 4),
    "flux_schnell": Row("tiny FLUX.1 schnell", "flux_schnell", FLUX_LORAS, {"cfg_scale": 1}, ("ip_adapter",)),
    "flux_dev": Row("tiny FLUX.1 dev", "flux_dev", FLUX_LORAS, {"cfg_scale": 1}, ("ip_adapter",)),
}
ALIASES = {"flux": ("flux_schnell", "flux_dev")}
ENV = {"ip_adapter": "PICTALE_IP_ADAPTER_DIR"}


def lora_variant(source: Path, path: Path, i: int) -> Path:
    """A distinct LoRA from `source`: its up/B matrices scaled by (-1)^i (1 + i/2) (same shapes, other effect)."""
    factor = (-1) ** i * (1 + 0.5 * i)
    tensors = load_file(str(source))
    scaled = {k: (v * factor if k.endswith(_UP_SUFFIXES) else v).astype(v.dtype) for k, v in tensors.items()}
    save_file(scaled, str(path))
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all threads (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def png(seed: int) -> bytes:
    rnd = np.random.default_rng(seed)
    img = Image.fromarray(rnd.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bench_row(row: Row, paths: dict[str, Path], root: Path, work: Path, args: argparse.Namespace) -> None:
    work.mkdir(parents=True)
    env = {ENV[key]: str(paths[key]) for key in row.env}
    proc, base = start_server(paths[row.model], work / "data", "--models-dir", str(root), **env)
    client = httpx.Client(base_url=base, timeout=600)
    try:
        for i, key in enumerate(row.loras):
            path = lora_variant(paths[key], work / f"lora{i}.safetensors", i)
            files = {"files": (path.name, path.read_bytes(), "application/octet-stream")}
            client.post("/v1/avatars", data={"kind": "lora", "name": f"lora{i}"}, files=files).raise_for_status()
        for i in range(2):
            files = {"files": (f"face{i}.png", png(i), "image/png")}
            client.post("/v1/avatars", data={"kind": "face", "name": f"face{i}"}, files=files).raise_for_status()
        tokens = [f"<be-lora:lora{i}:0.8>" for i in range(4)] + [f"<be-face:face{i}:0.5>" for i in range(2)]
        order = [0, 4, 1, 5, 2, 3]  # alternate kinds: LoRA, face, LoRA, face, LoRA, LoRA

        def run(prompt: str, seed: int) -> tuple[float, float]:
            """(wall seconds, server CPU seconds) of one request."""
            body = {"prompt": prompt, "steps": args.steps, "width": args.size, "height": args.size, "seed": seed}
            c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            client.post("/sdapi/v1/txt2img", json={**body, **row.body}).raise_for_status()
            return time.perf_counter() - t0, cpu_seconds(proc.pid) - c0

        for seed in range(2):  # warm the base model with plain requests
            run("a photo of a cat", seed)
        first: dict[str, float] = {}
        later: dict[str, list[float]] = {t: [] for t in tokens}
        ratios, cpu_ratios, plain_times, avatar_times = [], [], [], []
        for rnd in range(args.rounds + 1):
            for j, idx in enumerate(order):
                token = tokens[idx]
                seed = 1000 + rnd * 10 + j
                prompt = f"{token} a photo of a cat"
                pair = [("avatar", prompt), ("plain", "a photo of a cat")]
                if (rnd + j) % 2:
                    pair.reverse()
                measured = {kind: run(p, seed) for kind, p in pair}
                spent = {kind: wall for kind, (wall, _) in measured.items()}
                if rnd == 0:
                    first[token] = spent["avatar"]
                    continue
                later[token].append(spent["avatar"])
                ratios.append(spent["avatar"] / spent["plain"])
                if measured["plain"][1] > 0:
                    cpu_ratios.append(measured["avatar"][1] / measured["plain"][1])
                plain_times.append(spent["plain"])
                avatar_times.append(spent["avatar"])
        extra = "".join(f", {k} {v}" for k, v in row.body.items())
        shape = f"{args.size} px, {args.steps} steps{extra}"
        print(f"{row.label}, {shape}, {args.rounds} warm rounds x {len(order)} requests")
        if len(set(row.loras)) > 1:
            print("LoRAs: " + ", ".join(f"lora{i} from {key}" for i, key in enumerate(row.loras)))
        print(f"plain   median {statistics.median(plain_times) * 1000:8.1f} ms")
        print(f"avatars median {statistics.median(avatar_times) * 1000:8.1f} ms")
        print(f"warm ratio avatars/plain (median of pairs): {statistics.median(ratios):.3f}  (target <= 1.15)")
        if cpu_ratios:  # the server's own CPU time: less swayed by other processes on the machine than wall time
            print(f"server CPU ratio avatars/plain (median of pairs): {statistics.median(cpu_ratios):.3f}")
        print(f"{'avatar':24} {'first use ms':>12} {'later ms':>9} {'first/later':>11}")
        for token in tokens:
            warm = statistics.median(later[token])
            print(f"{token:24} {first[token] * 1000:12.1f} {warm * 1000:9.1f} {first[token] / warm:11.2f}")
        print(flush=True)
    finally:
        client.close()
        proc.terminate()
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--families", default="sd15,flux", help="comma-separated: sd15, flux, flux_schnell, flux_dev")
    args = ap.parse_args()
    names: list[str] = []
    for name in (f.strip() for f in args.families.split(",") if f.strip()):
        if name not in ROWS and name not in ALIASES:
            ap.error(f"--families: unknown {name!r} (sd15, flux, flux_schnell, flux_dev)")
        names += [n for n in ALIASES.get(name, (name,)) if n not in names]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        paths = write_tiny_models(root)
        for name in names:
            bench_row(ROWS[name], paths, root, Path(tmp) / name, args)


if __name__ == "__main__":
    main()
