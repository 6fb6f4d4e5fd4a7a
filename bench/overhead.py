"""pictale's HTTP overhead: the same txt2img through `POST /sdapi/v1/txt2img` and a direct diffusers call.

Both run in one session, alternating request by request, so machine noise hits both alike; the median
ratio api/direct is printed per case (target <= 1.05). Cases:

- tiny SD 1.5 at 64 px and 256 px (4 steps, CFG 7), and a case where one image takes about a second
  (256 px, 20 steps);
- tiny FLUX.1 schnell (4 steps, no guidance) and tiny FLUX.1 dev (4 steps, distilled guidance 3.5) at 64 px
  and 256 px, and at 512 px / 6 steps, where one image takes about a second: `FluxPipeline` with a fresh
  FlowMatchEulerDiscreteScheduler from the model's config, `max_sequence_length` as pictale's profile runs it
  (schnell 256, dev 512) and one CPU generator per image, against the
  API with `cfg_scale: 1` (one transformer pass per step, as the direct call; above 1 pictale runs true CFG).
  Before timing, one API image is compared with the direct image of the same seed: pixels must be equal
  ("pixels equal" in the last column, else the largest difference). pictale encodes a prompt once and passes
  the embeddings (reused across requests), so Flux rows also time the direct call with embeddings encoded once
  ("embeds s"; "vs emb" = api/that): the pure cost of HTTP and the service, while "ratio" is against the plain
  call that encodes the prompt every time.

    .venv/bin/python bench/overhead.py [--rounds 15] [--families sd15,flux]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import httpx
import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers.utils import logging as transformers_logging

from live_server import start_server
from pictale.engine.tiny import write_tiny_models
from pictale.engine.tiny.flux import write_tiny_flux

diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

CASES = [("64 px, 4 steps", 64, 4), ("256 px, 4 steps", 256, 4), ("256 px, 20 steps (~1 s)", 256, 20)]
FLUX_CASES = [
    # (label, variant, size, steps, distilled guidance or None)
    ("flux schnell 64 px, 4 steps", "schnell", 64, 4, None),
    ("flux schnell 256 px, 4 steps", "schnell", 256, 4, None),
    ("flux schnell 512 px, 6 st (~1 s)", "schnell", 512, 6, None),
    ("flux dev 64 px, 4 st, g 3.5", "dev", 64, 4, 3.5),
    ("flux dev 256 px, 4 st, g 3.5", "dev", 256, 4, 3.5),
    ("flux dev 512 px, 6 st (~1 s)", "dev", 512, 6, 3.5),
]
FLUX_T5_TOKENS = {"schnell": 256, "dev": 512}
"""The T5 sequence length pictale runs each variant with (its profile: schnell 256, dev and Kontext 512)."""
PROMPT = "a photo of a cat"


def measure(
    name: str,
    direct: Callable[[int], object],
    api: Callable[[int], object],
    rounds: int,
    note: str = "",
    direct_embeds: Callable[[int], object] | None = None,
) -> None:
    """Two warm-ups each, then `rounds` rounds of one call each, the order rotating every round; prints one row:
    median seconds per side and the median per-round ratios api/direct (and api/direct with reused embeddings)."""
    fns = [direct, api] + ([direct_embeds] if direct_embeds is not None else [])
    for warm in range(2):
        for fn in fns:
            fn(warm)
    spent: dict = {fn: [] for fn in fns}
    for i in range(rounds):
        for fn in fns[i % len(fns) :] + fns[: i % len(fns)]:
            t0 = time.perf_counter()
            fn(100 + i)
            spent[fn].append(time.perf_counter() - t0)
    med = statistics.median
    ratio = med(a / d for a, d in zip(spent[api], spent[direct], strict=True))
    emb_s, emb_ratio = "-", "-"
    if direct_embeds is not None:
        emb_s = f"{med(spent[direct_embeds]):.4f}"
        emb_ratio = f"{med(a / d for a, d in zip(spent[api], spent[direct_embeds], strict=True)):.3f}"
    print(
        f"{name:30} {med(spent[direct]):9.4f} {emb_s:>9} {med(spent[api]):9.4f} {ratio:7.3f} {emb_ratio:>7}  {note}",
        flush=True,
    )


def png_pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def pixel_note(api_b64: str, direct_image: Image.Image) -> str:
    a, d = png_pixels(api_b64), np.asarray(direct_image.convert("RGB"), dtype=np.int16)
    if a.shape != d.shape:
        return f"PIXELS DIFFER: shapes {a.shape} vs {d.shape}"
    diff = np.abs(a - d)
    if not diff.any():
        return "pixels equal"
    return f"PIXELS DIFFER: max {int(diff.max())}, {float((diff > 0).mean()):.1%} of values"


def sd15_rows(tmp: Path, rounds: int) -> None:
    model = write_tiny_models(tmp / "tiny")["sd15"]
    proc, base = start_server(model, tmp / "data-sd15")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        config = dict(pipe.scheduler.config)
        client = httpx.Client(timeout=600)
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

            measure(name, direct, api, rounds)
    finally:
        proc.terminate()
        proc.wait(20)


def flux_rows(tmp: Path, rounds: int) -> None:
    for variant in ("schnell", "dev"):
        folder, _ = write_tiny_flux(tmp / "flux", variant)
        proc, base = start_server(folder, tmp / f"data-flux-{variant}")
        try:
            pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            client = httpx.Client(timeout=600)
            for case in FLUX_CASES:
                if case[1] == variant:
                    flux_row(pipe, client, base, case, rounds)
        finally:
            proc.terminate()
            proc.wait(20)


def flux_row(pipe: FluxPipeline, client: httpx.Client, base: str, case: tuple, rounds: int) -> None:
    name, variant, size, steps, guidance = case
    tokens = FLUX_T5_TOKENS[variant]
    config = dict(pipe.scheduler.config)
    body = {
        "prompt": PROMPT,
        "steps": steps,
        "width": size,
        "height": size,
        "cfg_scale": 1,  # one transformer pass per step (above 1: true CFG, a second pass)
        "sampler_name": "Euler",
        "seed": 1,
    }
    if guidance is not None:
        body["distilled_cfg_scale"] = guidance  # dev's default; ignored by servers without the field

    def direct(seed: int, **prompt) -> Image.Image:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        return pipe(
            **(prompt or {"prompt": PROMPT}),
            num_inference_steps=steps,
            width=size,
            height=size,
            guidance_scale=0.0 if guidance is None else guidance,
            max_sequence_length=tokens,
            generator=[torch.Generator("cpu").manual_seed(seed)],
        ).images[0]

    def api(seed: int) -> str:
        r = client.post(base + "/sdapi/v1/txt2img", json={**body, "seed": seed})
        r.raise_for_status()
        return r.json()["images"][0]

    # pictale encodes a prompt once and passes the embeddings (cached across requests): the same, directly
    pe, ppe, _ = pipe.encode_prompt(PROMPT, PROMPT, max_sequence_length=tokens)

    def direct_embeds(seed: int) -> Image.Image:
        return direct(seed, prompt_embeds=pe, pooled_prompt_embeds=ppe)

    note = pixel_note(api(7), direct(7))
    measure(name, direct, api, rounds, note, direct_embeds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--families", default="sd15,flux", help="comma-separated: sd15, flux")
    args = ap.parse_args()
    families = {f.strip() for f in args.families.split(",") if f.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"{'case':30} {'direct s':>9} {'embeds s':>9} {'api s':>9} {'ratio':>7} {'vs emb':>7}  same seed vs direct",
            flush=True,
        )
        if "sd15" in families:
            sd15_rows(Path(tmp), args.rounds)
        if "flux" in families:
            flux_rows(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
