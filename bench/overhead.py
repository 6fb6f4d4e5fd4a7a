"""pictale's HTTP overhead: the same txt2img through `POST /sdapi/v1/txt2img` and a direct diffusers call.

Both run in one session, alternating request by request, so machine noise hits both alike; the median
ratio api/direct is printed per case. Cases: tiny SD 1.5 at 64 px and 256 px (4 steps), and a case
where one image takes about a second (256 px, 20 steps).

    .venv/bin/python bench/overhead.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

from live_server import start_server
from pictale.engine.tiny import write_tiny_models

CASES = [("64 px, 4 steps", 64, 4), ("256 px, 4 steps", 256, 4), ("256 px, 20 steps (~1 s)", 256, 20)]
PROMPT = "a photo of a cat"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_models(Path(tmp) / "tiny")["sd15"]
        proc, base = start_server(model, Path(tmp) / "data")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
            pipe.set_progress_bar_config(disable=True)
            config = dict(pipe.scheduler.config)
            client = httpx.Client(timeout=600)
            print(f"{'case':28} {'direct s':>9} {'api s':>9} {'ratio':>7}")
            for name, size, steps in CASES:
                body = {"prompt": PROMPT, "steps": steps, "width": size, "height": size, "seed": 1}

                def direct(seed: int, size: int = size, steps: int = steps) -> None:
                    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
                    pipe(
                        PROMPT,
                        num_inference_steps=steps,
                        width=size,
                        height=size,
                        guidance_scale=7.0,
                        generator=[torch.Generator("cpu").manual_seed(seed)],
                    ).images[0]

                def api(seed: int, body: dict = body) -> None:
                    r = client.post(base + "/sdapi/v1/txt2img", json={**body, "seed": seed})
                    r.raise_for_status()

                for warm in range(2):
                    direct(warm)
                    api(warm)
                d_times, a_times, ratios = [], [], []
                for i in range(args.rounds):
                    order = (direct, api) if i % 2 == 0 else (api, direct)
                    spent = {}
                    for fn in order:
                        t0 = time.perf_counter()
                        fn(100 + i)
                        spent[fn] = time.perf_counter() - t0
                    d_times.append(spent[direct])
                    a_times.append(spent[api])
                    ratios.append(spent[api] / spent[direct])
                print(
                    f"{name:28} {statistics.median(d_times):9.4f} {statistics.median(a_times):9.4f} "
                    f"{statistics.median(ratios):7.3f}"
                )
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
