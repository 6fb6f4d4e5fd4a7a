"""The web UI in Chromium vs the same job over the API: page load, and click-to-image vs POST-to-bytes.

    PYTHONPATH=src .venv/bin/python bench/web.py [--rounds 7]

One live `pictale serve` on the tiny demo model, Debian's Chromium driven by Playwright (headless, loopback
only, the browser tests' flags). Rows, medians over the rounds, both sides alternating in one run:

- page load: `goto("/")` in a fresh context until the Generate button is visible (scripts, vendored modules,
  `/v1/server`, `/v1/me`, the model and sampler lists).
- first image, per size: in the page, fill the prompt, click Generate, wait until the result <img> has
  decoded (the job's SSE events, the blob fetch of the PNG, the decode); over the API, what a client does
  for the same: `POST /v1/jobs`, follow `/v1/jobs/{id}/events` to `done`, GET the image's bytes. Ratio
  ui/api (target <= 1.10 where an image takes about a second: the UI adds its own work, not the server's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import ARGS, CHROMIUM  # noqa: E402

from live_server import start_server  # noqa: E402

SIZES = [(256, 4), (512, 8)]


def api_image(base: str, prompt: str, size: int, steps: int) -> float:
    t0 = time.perf_counter()
    body = {"prompt": prompt, "width": size, "height": size, "steps": steps, "seed": 1, "sampler": "Euler"}
    job = httpx.post(base + "/v1/jobs", json=body, timeout=60).json()
    result = None
    with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", timeout=120) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "done":
                result = json.loads(line[6:])["result"]
                break
    data = httpx.get(result["images"][0]["url"], timeout=60).content
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return time.perf_counter() - t0


def ui_image(page, base: str, prompt: str, size: int, steps: int) -> float:
    page.goto(base + "/")
    page.reload()  # a fresh page each time, as a user opening it
    page.get_by_role("button", name="Generate").wait_for()
    page.locator("details.options").evaluate("(d) => { d.open = true; }")
    page.get_by_label("Width").fill(str(size))
    page.get_by_label("Height").fill(str(size))
    page.get_by_label("Steps").fill(str(steps))
    page.get_by_label("Seed (-1: random)").fill("1")
    page.get_by_label("Sampler").select_option("Euler")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(
        "(alt) => [...document.querySelectorAll('img.result')]"
        ".some((i) => i.alt === alt && i.complete && i.naturalWidth)",
        arg=prompt,
        timeout=120_000,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="pictale-web-bench-"))
    proc, base = start_server(Path("tiny"), tmp / "data", OMP_NUM_THREADS="1")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "chromium"), "no_proxy": "localhost,127.0.0.1,::1"}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS, env=env)
            loads = []
            for _ in range(args.rounds):
                context = browser.new_context()
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(base + "/")
                page.get_by_role("button", name="Generate").wait_for()
                loads.append(time.perf_counter() - t0)
                context.close()
            rows.append(("page load to Generate button", statistics.median(loads), None, None))
            context = browser.new_context()
            page = context.new_page()
            for size, steps in SIZES:
                for _ in range(2):  # warm-up both sides at this size
                    api_image(base, "warm up", size, steps)
                    ui_image(page, base, "warm up", size, steps)
                ui, api = [], []
                for i in range(args.rounds):
                    order = [("api", api_image), ("ui", ui_image)]
                    for name, fn in order if i % 2 == 0 else order[::-1]:
                        prompt = f"a kite, round {i} {name}"
                        t = fn(base, prompt, size, steps) if name == "api" else fn(page, base, prompt, size, steps)
                        (api if name == "api" else ui).append(t)
                ratio = statistics.median(u / a for u, a in zip(ui, api, strict=True))
                rows.append(
                    (f"first image {size} px, {steps} steps", statistics.median(ui), statistics.median(api), ratio)
                )
            context.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    print(f"{'row':34} {'ui s':>8} {'api s':>8} {'ui/api':>7}")
    for name, ui_s, api_s, ratio in rows:
        api_txt = f"{api_s:8.3f}" if api_s is not None else f"{'':8}"
        ratio_txt = f"{ratio:7.3f}" if ratio is not None else ""
        print(f"{name:34} {ui_s:8.3f} {api_txt} {ratio_txt}")


if __name__ == "__main__":
    main()
