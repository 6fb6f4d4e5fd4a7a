"""LoRA training speed: pictale's `LoraTrainer` vs a minimal peft loop (training.md §1.2), same tiny SD 1.5, data
and settings, in one run; and a 200-step tiny run timed from loading the base to the finished kohya file.

Both loops: 4 photos at 64 px, batch 1, rank 4, the same targets (kohya's transformer set), AdamW lr 1e-3 wd 1e-2,
epsilon target with min-SNR-5, cached VAE posterior sampled each step, one CPU generator, grad-norm clip 1.0,
one torch thread. Rounds alternate (minimal, pictale, then the other order) after a warm-up, and each side's
figure is the median steps/s over the rounds; the ratio pictale/minimal targets >= 0.95.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python bench/train.py [--rounds 6] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.training.helpers import noise_photos, spec_for

from pictale.engine.models import load_pipeline, resolve_model
from pictale.engine.tiny import write_tiny_models
from pictale.training.export import save_kohya
from pictale.training.loop import LoraTrainer
from pictale.training.lora_setup import SD_TARGETS


class MinimalLoop:
    """training.md §1.2 as written: the diffusers example loop with peft, nothing else."""

    def __init__(self, pipe, photos, spec) -> None:
        import numpy as np
        from diffusers import DDPMScheduler
        from diffusers.training_utils import cast_training_params, compute_snr
        from peft import LoraConfig
        from PIL import Image

        self.pipe, self.compute_snr, self.gamma = pipe, compute_snr, spec.min_snr_gamma
        self.sched = DDPMScheduler.from_config(pipe.scheduler.config)
        with torch.no_grad():
            self.lat = []
            for p in photos:
                px = torch.from_numpy(np.asarray(Image.open(p.path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
                d = pipe.vae.encode(px.permute(2, 0, 1)[None]).latent_dist
                self.lat.append((d.mean, d.std))
            self.emb = [pipe.encode_prompt(p.caption, "cpu", 1, False)[0] for p in photos]
        unet = pipe.unet
        unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        pipe.vae.requires_grad_(False)
        torch.manual_seed(spec.seed)
        unet.add_adapter(
            LoraConfig(
                r=spec.rank,
                lora_alpha=spec.alpha,
                init_lora_weights="gaussian",
                target_modules=SD_TARGETS["transformer"],
            )
        )
        cast_training_params(unet, torch.float32)
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=spec.learning_rate, weight_decay=1e-2)
        self.g = torch.Generator().manual_seed(spec.seed)
        self.scale = pipe.vae.config.scaling_factor

    def steps(self, n: int) -> None:
        g, unet = self.g, self.pipe.unet
        unet.train()
        for _ in range(n):
            i = int(torch.randint(0, len(self.lat), (1,), generator=g))
            mean, std = self.lat[i]
            z = (mean + std * torch.randn(mean.shape, generator=g)) * self.scale
            noise = torch.randn(z.shape, generator=g)
            t = torch.randint(0, 1000, (1,), generator=g)
            pred = unet(self.sched.add_noise(z, noise, t), t, self.emb[i]).sample
            snr = self.compute_snr(self.sched, t)
            w = torch.stack([snr, self.gamma * torch.ones_like(t)], dim=1).min(dim=1)[0] / snr
            loss = (torch.nn.functional.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3)) * w).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)


def _load(models: dict):
    return load_pipeline(resolve_model(str(models["sd15"]), Path(models["sd15"]).parent), device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = write_tiny_models(tmp / "models")
        photos = noise_photos(tmp / "photos")
        spec = spec_for(models, "sd15", rank=4, alpha=4.0, learning_rate=1e-3, steps=10**6, min_snr_gamma=5.0)
        minimal = MinimalLoop(_load(models), photos, spec)
        trainer = LoraTrainer(_load(models), spec, photos, tmp / "work", device="cpu")
        trainer.prepare()
        minimal.steps(10)
        trainer.step_chunk(10)
        rates: dict[str, list[float]] = {"minimal": [], "pictale": []}
        for r in range(args.rounds):
            order = ("minimal", "pictale") if r % 2 == 0 else ("pictale", "minimal")
            for side in order:
                t0 = time.perf_counter()
                minimal.steps(args.steps) if side == "minimal" else trainer.step_chunk(args.steps)
                rates[side].append(args.steps / (time.perf_counter() - t0))
        m, p = statistics.median(rates["minimal"]), statistics.median(rates["pictale"])
        print(f"tiny SD 1.5, 64 px, batch 1, rank 4, {args.rounds} rounds x {args.steps} steps, one thread")
        print(f"  minimal peft loop : {m:6.1f} steps/s  (rounds: {', '.join(f'{x:.1f}' for x in rates['minimal'])})")
        print(f"  pictale LoraTrainer: {p:6.1f} steps/s  (rounds: {', '.join(f'{x:.1f}' for x in rates['pictale'])})")
        print(f"  ratio pictale/minimal: {p / m:.3f} (target >= 0.95)")

        t0 = time.perf_counter()
        run_spec = spec_for(models, "sd15", rank=4, alpha=4.0, learning_rate=1e-3, steps=200)
        run = LoraTrainer(_load(models), run_spec, photos, tmp / "run", device="cpu")
        run.prepare()
        while not run.done:
            run.step_chunk(50)
        out = save_kohya(run, tmp / "run" / "sasha.safetensors")
        total = time.perf_counter() - t0
        print(f"200-step tiny SD 1.5 run, load to finished file ({out.stat().st_size} bytes): {total:.2f} s")
        request_to_avatar(models, tmp)


def request_to_avatar(models: dict, tmp: Path, steps: int = 200) -> None:
    """`POST /v1/trainings` on a live `pictale serve` (tiny SD 1.5) until the LoRA avatar is registered: the whole
    job as a user sees it (photo checks, preparing, caching, training, samples at step 0 and at the end scored by
    the tiny CLIP, the kohya file, registration)."""
    import io
    import random

    import httpx
    from PIL import Image

    from live_server import start_server

    def photo(seed: int) -> bytes:
        rng = random.Random(seed)
        img = Image.frombytes("RGB", (256, 256), bytes(rng.getrandbits(8) for _ in range(256 * 256 * 3)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    proc, base = start_server(models["sd15"], tmp / "data")
    try:
        client = httpx.Client(base_url=base, timeout=600)
        files = [("photos", (f"p{i}.png", photo(i), "image/png")) for i in range(6)]
        form = {"name": "bench", "kind": "object", "steps": str(steps), "resolution": "256", "rank": "4",
                "checkpoint_every": str(steps), "seed": "1"}  # fmt: skip
        t0 = time.perf_counter()
        made = client.post("/v1/trainings", data=form, files=files)
        made.raise_for_status()
        while (view := client.get(f"/v1/trainings/{made.json()['id']}").json())["state"] in ("queued", "running"):
            time.sleep(0.1)
        total = time.perf_counter() - t0
        listed = client.get("/v1/avatars/lora/bench").status_code == 200
        print(
            f"{steps}-step tiny SD 1.5 training at 256 px over HTTP, request to registered avatar: {total:.2f} s "
            f"({view['state']}, avatar listed: {listed}, chosen step {view['chosen'] and view['chosen']['step']})"
        )
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
