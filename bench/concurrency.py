"""Throughput and latency under concurrent clients: continuous (step-level) batching, whole-batch merging, none.

A live `pictale serve` on the tiny SD 1.5 model (64 px, 4 steps, Euler, CFG 7) gets `POST /sdapi/v1/txt2img`
from 1, 4 and 8 clients in two ways:

- lockstep: client threads each send their next request when the last one answered;
- poisson: requests arrive at random moments, a Poisson stream at 80 % of the capacity of a direct batch of
  that many images (the rate of `DirectBatch.rate(clients)` x 0.8), each on its own thread.

Three servers: continuous batching (the default), whole-batch merging only (PICTALE_CONTINUOUS_BATCHING=false)
and no batching (PICTALE_BATCH_MAX=1). The reference is a direct diffusers call generating the whole batch
(StableDiffusionPipeline on the same folder, per-image generators), measured in each round just before the
server rows. Prints medians over the rounds: images/s, the ratio to the direct batch of as many images as
clients (targets: 4 and 8 clients >= 0.9x), and p50/p95 request latency.

    .venv/bin/python bench/concurrency.py [--requests 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

from live_server import PROMPTS, start_server
from pictale.engine.tiny import write_tiny_models

SIZE, STEPS, CFG = 64, 4, 7.0


def body(i: int) -> dict:
    return {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "steps": STEPS,
        "width": SIZE,
        "height": SIZE,
        "cfg_scale": CFG,
        "sampler_name": "Euler",
        "seed": 1000 + i,
    }


def drive(base: str, clients: int, requests: int) -> tuple[float, list[float]]:
    """`requests` txt2img spread over `clients` threads; (images/s, per-request latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                http.post("/sdapi/v1/txt2img", json=body(i)).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - t0), latencies


def poisson(base: str, rate: float, requests: int, seed: int = 0) -> tuple[float, list[float]]:
    """`requests` txt2img arriving as a Poisson stream of `rate` per second; (images/s, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    gaps = random.Random(seed)
    http = httpx.Client(base_url=base, timeout=600, limits=httpx.Limits(max_connections=requests))

    def one(i: int) -> None:
        t0 = time.perf_counter()
        http.post("/sdapi/v1/txt2img", json=body(i)).raise_for_status()
        with lock:
            latencies.append(time.perf_counter() - t0)

    threads = []
    t0 = time.perf_counter()
    for i in range(requests):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(gaps.expovariate(rate))
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    http.close()
    return requests / elapsed, latencies


class DirectBatch:
    """A plain diffusers pipeline generating `batch` images per call, per-image generators."""

    def __init__(self, model: Path) -> None:
        self.pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
        self.pipe.set_progress_bar_config(disable=True)
        self.config = dict(self.pipe.scheduler.config)
        self.calls = 0

    def run(self, batch: int) -> None:
        k = self.calls
        self.calls += 1
        self.pipe.scheduler = EulerDiscreteScheduler.from_config(self.config)
        self.pipe(
            [PROMPTS[(k + j) % len(PROMPTS)] for j in range(batch)],
            num_inference_steps=STEPS,
            width=SIZE,
            height=SIZE,
            guidance_scale=CFG,
            generator=[torch.Generator("cpu").manual_seed(k * batch + j) for j in range(batch)],
        )

    def rate(self, batch: int, images: int) -> float:
        """Images/s over about `images` images."""
        self.run(batch)
        calls = max(2, images // batch)
        t0 = time.perf_counter()
        for _ in range(calls):
            self.run(batch)
        return calls * batch / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    global SIZE, STEPS
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the machine's noise hits every row alike")
    ap.add_argument("--size", type=int, default=SIZE, help="image size in px (64: per-request overhead dominates)")
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args()
    SIZE, STEPS = args.size, args.steps
    n = args.requests
    room = {"PICTALE_QUEUE_SIZE": str(4 * n)}  # a Poisson burst must never meet a 429
    configs = [
        ("continuous", room),
        ("whole-batch", {**room, "PICTALE_CONTINUOUS_BATCHING": "false"}),
        ("no batching", {**room, "PICTALE_BATCH_MAX": "1"}),
    ]
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    direct: dict[int, list[float]] = {1: [], 4: [], 8: []}
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_models(Path(tmp) / "tiny")["sd15"]
        reference = DirectBatch(model)
        servers = []
        for i, (label, env) in enumerate(configs):
            servers.append((label, *start_server(model, Path(tmp) / f"data-{i}", **env)))
        try:
            for _, _, base in servers:
                drive(base, 4, 16)  # warm up: model, caches, thread pools
            for r in range(args.rounds):
                for batch in direct:
                    direct[batch].append(reference.rate(batch, n))
                time.sleep(1)  # let the direct call's spinning OpenMP threads go idle before the servers run
                for label, _, base in servers if r % 2 == 0 else servers[::-1]:
                    for clients in (1, 4, 8):
                        for mode in ("lockstep", "poisson"):
                            if clients == 1 and mode == "poisson":
                                continue
                            row = f"{label}, {clients} client{'s' if clients > 1 else ''}, {mode}"
                            time.sleep(0.5)  # the previous row's threads go idle
                            if mode == "lockstep":
                                rate, lat = drive(base, clients, n)
                            else:
                                rate, lat = poisson(base, 0.8 * direct[clients][-1], n, seed=r)
                            rates.setdefault(row, []).append(rate)
                            ratios.setdefault(row, []).append(rate / direct[clients][-1])
                            latencies.setdefault(row, []).extend(lat)
        finally:
            for _, proc, _ in servers:
                proc.terminate()
                proc.wait(20)
    med = statistics.median
    print(f"tiny SD 1.5, {SIZE} px, {STEPS} steps, CFG {CFG}, Euler; {n} requests per row and round; ", end="")
    print(f"{args.rounds} rounds (medians); {os.cpu_count()} CPUs")
    print("direct diffusers, images/s: " + ", ".join(f"batch of {b}: {med(v):.1f}" for b, v in direct.items()))
    print(f"{'server':38} {'images/s':>9} {'/direct':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for row, values in rates.items():
        lat = latencies[row]
        print(f"{row:38} {med(values):9.1f} {med(ratios[row]):8.2f} {med(lat) * 1000:8.0f} {pct(lat, 95) * 1000:8.0f}")
    print("(/direct: against a direct batch of as many images as clients; poisson rows arrive at 0.8 of that rate)")


if __name__ == "__main__":
    main()
