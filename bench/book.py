"""A picture book's overhead: an 8-page book with N=2 candidates vs. the same 16 generations done directly.

The book goes through a live `pictale serve` (`POST /v1/books`, its job followed over SSE until done): page
planning (keyword rules, no LLM), 16 generations through the queue, CLIP scoring of every candidate (tiny CLIP) and the
choice per page; the PDF export is timed on its own. "Direct" is the same 16 generations with diffusers in
this process: the book's own page prompts (characters expanded) and recorded seeds, one pipeline call per
page with its two seeds (what the book asks the worker for), and also 16 single-image calls. Rounds
alternate book and direct in one run, so machine noise hits both; the median ratio is printed.

    .venv/bin/python bench/book.py [--rounds 3] [--size 256] [--steps 20]
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
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

from live_server import PAGES, start_server
from pictale.engine.tiny import write_tiny_models
from pictale.engine.tiny.clip import write_tiny_clip

EXTRA_ENV = dict(e.split("=", 1) for e in os.environ.get("BOOK_BENCH_ENV", "").split() if "=" in e)
STYLE = "children's book illustration, watercolor"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_models(Path(tmp) / "tiny")["sd15"]
        clip = write_tiny_clip(Path(tmp) / "tiny-clip")
        proc, base = start_server(model, Path(tmp) / "data", **{"PICTALE_CLIP_MODEL": str(clip), **EXTRA_ENV})
        client = httpx.Client(base_url=base, timeout=600)
        pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        config = dict(pipe.scheduler.config)
        body = {
            "story": "\n\n".join(PAGES),
            "style": STYLE,
            "candidates": 2,
            "width": args.size,
            "height": args.size,
            "steps": args.steps,
            "sampler": "Euler a",
        }

        def book(seed: int) -> dict:
            r = client.post("/v1/books", json={**body, "seed": seed})
            r.raise_for_status()
            book_id = r.json()["id"]
            # Follow the job's SSE stream (as a client would) rather than polling, which costs the server CPU.
            with client.stream("GET", f"/v1/jobs/{book_id}/events") as events:
                for line in events.iter_lines():
                    if line.startswith("event:") and line.split(":", 1)[1].strip() in ("done", "failed", "cancelled"):
                        break
            view = client.get(f"/v1/books/{book_id}").json()
            assert view["state"] == "done", view
            return view

        def direct(view: dict, per_page: bool) -> None:
            for page in view["pages"]:
                seeds = [c["seed"] for c in page["candidates"]]
                prompt = page["prompt"]  # no characters in this book: the prompt the service encoded
                groups = [seeds] if per_page else [[s] for s in seeds]
                for group in groups:
                    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(config)
                    pipe(
                        [prompt] * len(group),
                        num_inference_steps=args.steps,
                        width=args.size,
                        height=args.size,
                        guidance_scale=7.0,
                        generator=[torch.Generator("cpu").manual_seed(s) for s in group],
                    )

        try:
            warm = book(1)  # loads the CLIP scorer, warms the caches
            direct(warm, True)
            rows = []
            for i in range(args.rounds):
                t0 = time.perf_counter()
                view = book(100 + i)
                t_book = time.perf_counter() - t0
                t0 = time.perf_counter()
                direct(view, True)
                t_pages = time.perf_counter() - t0
                t0 = time.perf_counter()
                direct(view, False)
                t_single = time.perf_counter() - t0
                t0 = time.perf_counter()
                pdf = client.get(f"/v1/books/{view['id']}/export.pdf?scores=true")
                t_pdf = time.perf_counter() - t0
                assert pdf.status_code == 200
                rows.append((t_book, t_pages, t_single, t_pdf))
                print(
                    f"round {i + 1}: book {t_book:.2f} s, direct per page {t_pages:.2f} s, "
                    f"direct 16 single {t_single:.2f} s, PDF export {t_pdf:.3f} s"
                )
            med = [statistics.median(col) for col in zip(*rows, strict=True)]
            r_pages = statistics.median(b / p for b, p, _, _ in rows)
            r_single = statistics.median(b / s for b, _, s, _ in rows)
            print(f"\n{args.size} px, {args.steps} steps, 8 pages x 2 candidates, tiny SD 1.5 + tiny CLIP")
            print(
                f"median book {med[0]:.2f} s | direct (a call per page, 2 seeds) {med[1]:.2f} s | ratio {r_pages:.3f}"
            )
            print(f"median book {med[0]:.2f} s | direct (16 single calls) {med[2]:.2f} s | ratio {r_single:.3f}")
            print(f"PDF export (8 pages, scores) {med[3]:.3f} s; target: book / direct <= 1.10")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
