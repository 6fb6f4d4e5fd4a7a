"""The cost of avatars: a stream alternating among 4 LoRA avatars and 2 face avatars vs. the same stream
without avatars (same prompts, seeds and sizes), through a live `pictale serve`, in one run.

Prints the warm ratio avatars/plain (median of per-request ratios, requests interleaved so machine noise hits
both streams alike) and the cost of the first use of each avatar vs. its later uses.

    .venv/bin/python bench/avatars.py [--rounds 4] [--size 128] [--steps 4]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from live_server import start_server
from pictale.engine.tiny import write_tiny_models


def lora_variants(source: Path, out: Path, n: int) -> list[Path]:
    """n distinct LoRAs from one: the up/B matrices scaled differently (same shapes, different effect)."""
    tensors = load_file(str(source))
    paths = []
    for i in range(n):
        factor = (-1) ** i * (1 + 0.5 * i)
        scaled = {k: (v * factor if ("up" in k or "lora_B" in k) else v).astype(v.dtype) for k, v in tensors.items()}
        path = out / f"lora{i}.safetensors"
        save_file(scaled, str(path))
        paths.append(path)
    return paths


def png(seed: int) -> bytes:
    rnd = np.random.default_rng(seed)
    img = Image.fromarray(rnd.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        paths = write_tiny_models(root)
        proc, base = start_server(paths["sd15"], Path(tmp) / "data", "--models-dir", str(root))
        client = httpx.Client(base_url=base, timeout=600)
        try:
            loras = lora_variants(paths["lora_peft"], Path(tmp), 4)
            for i, path in enumerate(loras):
                files = {"files": (path.name, path.read_bytes(), "application/octet-stream")}
                r = client.post("/v1/avatars", data={"kind": "lora", "name": f"lora{i}"}, files=files)
                r.raise_for_status()
            for i in range(2):
                files = {"files": (f"face{i}.png", png(i), "image/png")}
                client.post("/v1/avatars", data={"kind": "face", "name": f"face{i}"}, files=files).raise_for_status()
            tokens = [f"<be-lora:lora{i}:0.8>" for i in range(4)] + [f"<be-face:face{i}:0.5>" for i in range(2)]
            order = [0, 4, 1, 5, 2, 3]  # alternate kinds: LoRA, face, LoRA, face, LoRA, LoRA

            def run(prompt: str, seed: int) -> float:
                body = {"prompt": prompt, "steps": args.steps, "width": args.size, "height": args.size, "seed": seed}
                t0 = time.perf_counter()
                client.post("/sdapi/v1/txt2img", json=body).raise_for_status()
                return time.perf_counter() - t0

            for seed in range(2):  # warm the base model with plain requests
                run("a photo of a cat", seed)
            first: dict[str, float] = {}
            later: dict[str, list[float]] = {t: [] for t in tokens}
            ratios, plain_times, avatar_times = [], [], []
            for rnd in range(args.rounds + 1):
                for j, idx in enumerate(order):
                    token = tokens[idx]
                    seed = 1000 + rnd * 10 + j
                    prompt = f"{token} a photo of a cat"
                    pair = [("avatar", prompt), ("plain", "a photo of a cat")]
                    if (rnd + j) % 2:
                        pair.reverse()
                    spent = {kind: run(p, seed) for kind, p in pair}
                    if rnd == 0:
                        first[token] = spent["avatar"]
                        continue
                    later[token].append(spent["avatar"])
                    ratios.append(spent["avatar"] / spent["plain"])
                    plain_times.append(spent["plain"])
                    avatar_times.append(spent["avatar"])
            print(f"tiny SD 1.5, {args.size} px, {args.steps} steps, {args.rounds} warm rounds x {len(order)} requests")
            print(f"plain   median {statistics.median(plain_times) * 1000:8.1f} ms")
            print(f"avatars median {statistics.median(avatar_times) * 1000:8.1f} ms")
            print(f"warm ratio avatars/plain (median of pairs): {statistics.median(ratios):.3f}  (target <= 1.15)")
            print(f"{'avatar':24} {'first use ms':>12} {'later ms':>9} {'first/later':>11}")
            for token in tokens:
                warm = statistics.median(later[token])
                print(f"{token:24} {first[token] * 1000:12.1f} {warm * 1000:9.1f} {first[token] / warm:11.2f}")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
