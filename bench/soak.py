"""Soak: 1000 mixed requests over every dialect against one live `pictale serve` on the tiny demo model.

A1111 (txt2img with avatar and character tokens, img2img, png-info, options, progress, lists), OpenAI
(generations as b64 and url, edits, models), jobs (create, poll, cancel), imagine, characters and avatars
(list, show), a picture book at the start, and a share of bad requests (each must be a 4xx). Four client
threads; requests are drawn in a seeded order, so every run sends the same mix.

Prints: the 5xx count (target 0), unexpected statuses, the server's RSS at requests 200 and 1000 and the
drift between them (target <= 3 %), and p50/p95 latency per route.

    .venv/bin/python bench/soak.py [--requests 1000] [--clients 4]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from PIL import Image

from live_server import start_server
from pictale.engine.tiny import write_tiny_models

FAST = {"width": 64, "height": 64, "steps": 2}
OAI_FAST = {"size": "64x64", "steps": 2}


def png(seed: int, size: int = 64) -> bytes:
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", (size, size), rnd.randbytes(size * size * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def setup(c: httpx.Client, lora: bytes) -> None:
    faces = [("files", (f"f{i}.png", png(i), "image/png")) for i in range(2)]
    r = c.post("/v1/avatars", data={"kind": "face", "name": "lucy"}, files=faces)
    r.raise_for_status()
    lora_file = [("files", ("toy.safetensors", lora, "application/octet-stream"))]
    r = c.post("/v1/avatars", data={"kind": "lora", "name": "toy", "trigger_words": "toy_face"}, files=lora_file)
    r.raise_for_status()
    body = {"name": "sasha", "description": "a girl with red hair", "avatars": "<be-face:lucy:0.4>"}
    c.post("/v1/characters", json=body).raise_for_status()


def requests_mix(n: int, seed: int = 7) -> list[tuple[str, str, str, dict, tuple[int, ...]]]:
    """(route label, method, path, httpx kwargs, accepted statuses), n of them in a seeded order."""
    init = base64.b64encode(png(99)).decode()
    edit_files = [("image", ("a.png", png(5), "image/png"))]
    choices = [
        (10, "a1111 txt2img", "POST", "/sdapi/v1/txt2img", {"json": {**FAST, "prompt": "a red fox"}}, (200,)),
        (
            6,
            "a1111 txt2img avatars",
            "POST",
            "/sdapi/v1/txt2img",
            {"json": {**FAST, "prompt": "<be-face:lucy:0.4> <be-lora:toy:0.8> toy_face, a girl playing tennis"}},
            (200,),
        ),
        (
            4,
            "a1111 txt2img char",
            "POST",
            "/sdapi/v1/txt2img",
            {"json": {**FAST, "prompt": "<be-char:sasha> reading"}},
            (200,),
        ),
        (5, "a1111 img2img", "POST", "/sdapi/v1/img2img", {"json": {**FAST, "init_images": [init]}}, (200,)),
        (4, "a1111 png-info", "POST", "/sdapi/v1/png-info", {"json": {"image": init}}, (200,)),
        (4, "a1111 options", "GET", "/sdapi/v1/options", {}, (200,)),
        (6, "a1111 progress", "GET", "/sdapi/v1/progress", {}, (200,)),
        (3, "a1111 lists", "GET", "/sdapi/v1/sd-models", {}, (200,)),
        (3, "a1111 loras", "GET", "/sdapi/v1/loras", {}, (200,)),
        (8, "openai generations", "POST", "/v1/images/generations", {"json": {"prompt": "a cat", **OAI_FAST}}, (200,)),
        (
            3,
            "openai generations url",
            "POST",
            "/v1/images/generations",
            {"json": {"prompt": "a cat", "response_format": "url", **OAI_FAST}},
            (200,),
        ),
        (
            4,
            "openai edits",
            "POST",
            "/v1/images/edits",
            {"data": {"prompt": "a hat", **OAI_FAST}, "files": edit_files},
            (200,),
        ),
        (3, "openai models", "GET", "/v1/models", {}, (200,)),
        (8, "jobs create", "POST", "/v1/jobs", {"json": {"prompt": "a castle", **FAST}}, (202,)),
        (
            4,
            "jobs cancel",
            "CANCEL",
            "/v1/jobs",
            {"json": {"prompt": "a slow castle", "width": 128, "height": 128, "steps": 20}},
            (200, 202),
        ),
        (3, "jobs list", "GET", "/v1/jobs", {}, (200,)),
        (
            3,
            "imagine",
            "POST",
            "/v1/story/imagine",
            {
                "json": {
                    "messages": [{"role": "user", "content": "Sasha finds a fox in the snow"}],
                    "character": "sasha",
                    "size": "64x64",
                    "steps": 2,
                }
            },
            (200,),
        ),
        (3, "characters", "GET", "/v1/characters", {}, (200,)),
        (3, "avatars", "GET", "/v1/avatars", {}, (200,)),
        (2, "bad seed", "POST", "/sdapi/v1/txt2img", {"json": {"seed": 2**70}}, (422,)),
        (2, "bad size", "POST", "/v1/images/generations", {"json": {"prompt": "a", "size": "13x13"}}, (400,)),
        (
            2,
            "bad nan",
            "POST",
            "/v1/jobs",
            {"content": '{"cfg_scale": NaN}', "headers": {"Content-Type": "application/json"}},
            (422,),
        ),
        (2, "bad image", "POST", "/sdapi/v1/img2img", {"json": {"init_images": ["bm90IGFuIGltYWdl"]}}, (422,)),
        (
            1,
            "bad nested",
            "POST",
            "/v1/images/generations",
            {"content": "[" * 50000, "headers": {"Content-Type": "application/json"}},
            (400,),
        ),
    ]
    rnd = random.Random(seed)
    weights = [c[0] for c in choices]
    return [tuple(c[1:]) for c in rnd.choices(choices, weights=weights, k=n)]


def run_one(c: httpx.Client, method: str, path: str, kw: dict) -> int:
    if method == "CANCEL":  # a job that is cancelled while queued or running
        r = c.post(path, **kw)
        if r.status_code != 202:
            return r.status_code
        return c.delete(f"{path}/{r.json()['id']}").status_code
    return c.request(method, path, **kw).status_code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pictale-soak-") as tmp:
        root = Path(tmp)
        models = write_tiny_models(root / "tiny")
        proc, base = start_server("tiny", root / "data")
        try:
            with httpx.Client(base_url=base, timeout=300) as c:
                setup(c, models["lora_peft"].read_bytes())
                book = c.post(
                    "/v1/books",
                    json={"story": "A fox ran.\n\nThe fox slept.", "characters": ["sasha"], "candidates": 1, **FAST},
                )
                book.raise_for_status()
            mix = requests_mix(args.requests)
            stats = _drive(base, mix, args.clients, proc.pid)
            with httpx.Client(base_url=base, timeout=60) as c:
                book_state = c.get(f"/v1/books/{book.json()['id']}").json()["state"]
        finally:
            proc.terminate()
            proc.wait(30)
    _report(stats, book_state)


def _drive(base: str, mix: list, clients: int, pid: int) -> dict:
    lock = threading.Lock()
    cursor = iter(enumerate(mix, 1))
    out = {"lat": defaultdict(list), "codes": defaultdict(lambda: defaultdict(int)), "unexpected": [], "rss": {}}

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                i, (label, method, path, kw, ok) = item
                start = time.perf_counter()
                status = run_one(c, method, path, kw)
                took = time.perf_counter() - start
                with lock:
                    out["lat"][label].append(took)
                    out["codes"][label][status] += 1
                    if status not in ok:
                        out["unexpected"].append((label, status))
                    if i % 100 == 0 or i == len(mix):
                        out["rss"][i] = rss_kib(pid)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["seconds"] = time.perf_counter() - started
    return out


def _report(stats: dict, book_state: str) -> None:
    total = sum(len(v) for v in stats["lat"].values())
    five = sum(n for codes in stats["codes"].values() for s, n in codes.items() if s >= 500)
    print(
        f"requests: {total} in {stats['seconds']:.0f} s; 5xx: {five}; unexpected statuses: {len(stats['unexpected'])}"
    )
    for label, status in sorted(set(stats["unexpected"]))[:20]:
        print(f"  unexpected {status} on {label}")
    rss = stats["rss"]
    first, last = rss.get(200), rss.get(total)
    if first and last:
        drift = 100 * (last - first) / first
        print(f"RSS at request 200: {first / 1024:.0f} MiB; at {total}: {last / 1024:.0f} MiB; drift {drift:+.1f} %")
        print("RSS every 100 requests (MiB):", " ".join(f"{rss[k] / 1024:.0f}" for k in sorted(rss)))
    print(f"book: {book_state}")
    print(f"{'route':28} {'n':>5} {'p50 ms':>8} {'p95 ms':>8}  statuses")
    for label in sorted(stats["lat"]):
        lat = sorted(stats["lat"][label])
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        codes = " ".join(f"{s}x{n}" for s, n in sorted(stats["codes"][label].items()))
        print(f"{label:28} {len(lat):5d} {1000 * statistics.median(lat):8.0f} {1000 * p95:8.0f}  {codes}")


if __name__ == "__main__":
    main()
