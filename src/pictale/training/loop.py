"""The LoRA loop: cached latents and text embeddings, peft LoRA, one generator, resumable chunks of steps.

The service gives the trainer its own pipeline (never the serving one: LoRA state lives on the shared UNet,
training.md §6), then:

    trainer = LoraTrainer(pipe, spec, photos, workdir, device="cuda", dtype=torch.float16)
    trainer.prepare()                       # stage "caching"; VAE latents and text embeddings, once
    if (ck := state.latest_checkpoint(workdir)): trainer.load_state(ck)
    while not trainer.done:
        losses = trainer.step_chunk(25)     # [(step, loss)]; the worker serves generation jobs between chunks

A run resumed from `save_state` at step k in a new process gives bit-identical weights to an uninterrupted run on
the same device: one `torch.Generator` (CPU, seeded from spec.seed) draws the data order, flips, latent samples,
noise and timesteps, and its state is saved with the optimiser's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pictale.training import lora_setup, state
from pictale.training.objectives import FlowObjective, NoiseObjective, compute_dtype, encode_captions, stack_text
from pictale.training.spec import PreparedPhoto, TrainingSpec

log = logging.getLogger(__name__)
EVAL_SEED = 20240611
STATE_VERSION = 1


class LoraTrainer:
    """Trains one LoRA on a pipeline it owns; `prepare()` once, then `step_chunk(n)` until `done`."""

    def __init__(
        self,
        pipe,
        spec: TrainingSpec,
        photos: list[PreparedPhoto],
        workdir: Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        if not photos:
            raise ValueError("no photos to train on")
        if spec.family == "flux" and spec.train_text_encoder:
            raise ValueError("text-encoder LoRA is not supported on FLUX.1 (the transformer LoRA carries it)")
        self.pipe, self.spec, self.photos = pipe, spec, list(photos)
        self.workdir, self.device = Path(workdir), str(device)
        self.dtype = dtype or compute_dtype(lora_setup.denoiser(pipe))
        self.family = spec.family
        self.stage = "preparing"
        self.step = 0
        self.epoch = 0
        self.order = torch.zeros((0, spec.batch_size), dtype=torch.int64)
        self.pos = 0
        self.generator = torch.Generator("cpu").manual_seed(spec.seed)
        self.modules = lora_setup.add_lora(pipe, self.family, spec, train_text_encoder=spec.train_text_encoder)
        self.params = lora_setup.trainable(self.modules)
        self.optimizer, self.optimizer_name = lora_setup.make_optimizer(self.params, spec, self.device)
        cuda = self.device.startswith("cuda")
        self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(spec.mixed_precision) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast is torch.float16 else None
        if spec.gradient_checkpointing:
            lora_setup.denoiser(pipe).enable_gradient_checkpointing()
        if self.family == "flux":
            self.objective = FlowObjective(pipe, guidance=float(spec.extra.get("guidance", 3.5)))
        else:
            self.objective = NoiseObjective(
                pipe,
                self.family,
                min_snr_gamma=spec.min_snr_gamma,
                noise_offset=float(spec.extra.get("noise_offset", 0)),
            )
        self.mean: list[list[torch.Tensor]] = []
        self.std: list[list[torch.Tensor]] = []
        self.text: list[dict] = []
        self.sizes: list[tuple[int, int]] = []

    # -- caching ------------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, on_stage: Callable[[str], None] | None = None) -> None:
        """Cache the VAE posterior (mean, std) of every photo (and its mirror when flipping) and its caption's
        text embeddings (unless the text encoder trains); each step samples mean + std * noise."""
        self._set_stage("caching", on_stage)
        multiple = 16 if self.family == "flux" else 8
        vae = self.pipe.vae
        half = vae.dtype == torch.float16
        if half:  # the SDXL VAE gives NaN latents in fp16 (diffusers' scripts keep it in fp32): encode in fp32
            vae.to(torch.float32)
        try:
            self._cache_latents(vae, multiple)
        finally:
            if half:
                vae.to(torch.float16)
        if not self.spec.train_text_encoder:
            self.text = encode_captions(self.pipe, self.family, [p.caption for p in self.photos], self.device)
        self._set_stage("training", on_stage)

    def _cache_latents(self, vae, multiple: int) -> None:
        self.mean, self.std, self.sizes = [], [], []
        for photo in self.photos:
            img = Image.open(photo.path).convert("RGB")
            w, h = img.size
            if w % multiple or h % multiple:
                raise ValueError(f"{photo.source}: {w}x{h} is not a multiple of {multiple} px (crop it to a bucket)")
            px = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
            variants = [px, px.flip(-1)] if self.spec.flip else [px]
            means, stds = [], []
            for v in variants:
                dist = vae.encode(v.to(self.device, vae.dtype)).latent_dist
                means.append(dist.mean.float())
                # extra["latent_sample"]=False trains on the posterior mean alone (a VAE whose std is noise)
                stds.append(dist.std.float() * float(self.spec.extra.get("latent_sample", True)))
            self.mean.append(means)
            self.std.append(stds)
            self.sizes.append((h, w))

    def _set_stage(self, stage: str, on_stage) -> None:
        self.stage = stage
        if on_stage:
            on_stage(stage)

    # -- training -----------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.step >= self.spec.steps

    def step_chunk(self, n: int, *, cancel: Callable[[], bool] | None = None) -> list[tuple[int, float]]:
        """Run up to n steps (fewer at the end or when `cancel()` turns true); [(step number after it, loss)]."""
        if not self.mean:
            raise RuntimeError("call prepare() before training")
        out = []
        for module in self.modules.values():
            module.train()
        try:
            while len(out) < n and not self.done and not (cancel and cancel()):
                out.append((self.step + 1, self._one_step()))
                self.step += 1
        finally:
            for module in self.modules.values():
                module.eval()
        return out

    def _next_batch(self) -> list[int]:
        if self.pos >= len(self.order):
            self.order = self._epoch_order()
            self.pos = 0
            self.epoch += 1
        row = self.order[self.pos]
        self.pos += 1
        return [int(i) for i in row if i >= 0]

    def _epoch_order(self) -> torch.Tensor:
        """Batches of one size each (buckets), shuffled by the generator; padded with -1 to the batch size."""
        perm = torch.randperm(len(self.photos), generator=self.generator).tolist()
        buckets: dict[tuple[int, int], list[int]] = {}
        for i in perm:
            buckets.setdefault(self.sizes[i], []).append(i)
        b = self.spec.batch_size
        rows = [ids[k : k + b] for ids in buckets.values() for k in range(0, len(ids), b)]
        shuffle = torch.randperm(len(rows), generator=self.generator).tolist()
        return torch.tensor([rows[j] + [-1] * (b - len(rows[j])) for j in shuffle], dtype=torch.int64)

    def _batch(self, ids: list[int], flips: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        mean = torch.cat([self.mean[i][f] for i, f in zip(ids, flips, strict=True)])
        std = torch.cat([self.std[i][f] for i, f in zip(ids, flips, strict=True)])
        if self.spec.train_text_encoder:
            text = encode_captions(self.pipe, self.family, [self.photos[i].caption for i in ids], self.device)
        else:
            text = [self.text[i] for i in ids]
        return mean, std, stack_text(text)

    def _forward(self, ids, flips, g) -> torch.Tensor:
        mean, std, text = self._batch(ids, flips)
        draws = self.objective.draw(mean, std, g)
        ctx = torch.autocast("cuda", dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with ctx:
            per_sample = self.objective.loss(
                lora_setup.denoiser(self.pipe), mean, std, text, draws, [self.sizes[i] for i in ids]
            )
        return per_sample.mean()

    def _one_step(self) -> float:
        g = self.generator
        ids = self._next_batch()
        flips = torch.randint(0, 2, (len(ids),), generator=g).tolist() if self.spec.flip else [0] * len(ids)
        warmup = int(self.spec.extra.get("warmup_steps", 0))
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * min(1.0, (self.step + 1) / max(1, warmup))
        loss = self._forward(ids, flips, g)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    @torch.no_grad()
    def eval_loss(self, count: int = 32, seed: int = EVAL_SEED) -> float:
        """Mean loss on a fixed evaluation set (`count` draws from `seed` over the photos, §1.3): the learning
        signal, since the per-step loss is too noisy. Leaves the training generator untouched."""
        g = torch.Generator("cpu").manual_seed(seed)
        total = 0.0
        for k in range(count):
            i = k % len(self.photos)
            f = int(torch.randint(0, 2, (1,), generator=g)) if self.spec.flip else 0
            total += float(self._forward([i], [f], g))
        return total / count

    # -- state --------------------------------------------------------------------------------------

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA weights, peft names prefixed `unet.`/`transformer.`/`text_encoder[_2].` (what export reads)."""
        return lora_setup.lora_state(self.modules)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON-able meta) of everything a resume needs."""
        tensors = {f"lora.{k}": v for k, v in self.lora_state_dict().items()}
        opt_tensors, opt_meta = state.flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        tensors["rng"] = self.generator.get_state()
        tensors["order"] = self.order.clone()
        meta = {
            "version": STATE_VERSION,
            "family": self.family,
            "rank": self.spec.rank,
            "alpha": float(self.spec.alpha),
            "step": self.step,
            "epoch": self.epoch,
            "pos": self.pos,
            "optimizer": opt_meta,
            "optimizer_name": self.optimizer_name,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "fingerprint": self.fingerprint(),
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if meta.get("fingerprint") != self.fingerprint():
            raise ValueError("saved state is for other settings or photos; start afresh or restore them")
        lora_setup.load_lora_state(self.modules, {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")})
        self.optimizer.load_state_dict(state.unflatten_optimizer(tensors, meta["optimizer"]))
        self.generator.set_state(tensors["rng"])
        self.order = tensors["order"].clone()
        self.step, self.epoch, self.pos = int(meta["step"]), int(meta["epoch"]), int(meta["pos"])
        if self.scaler and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])

    def save_state(self, folder: Path) -> Path:
        """Write `trainer_state.safetensors` + `trainer_state.json` into folder (no pickle)."""
        tensors, meta = self.state_dict()
        state.write_state(Path(folder), tensors, meta)
        return Path(folder)

    def load_state(self, folder: Path) -> None:
        """Continue from a folder written by `save_state` (or a `checkpoint-<step>/`)."""
        self.load_state_dict(*state.read_state(Path(folder)))

    def fingerprint(self) -> str:
        """Hash of what makes a resume valid: the settings that shape the run and the photos (bytes, captions)."""
        s = self.spec
        keys = (s.family, s.rank, s.alpha, s.learning_rate, s.optimizer, s.batch_size, s.seed)
        h = hashlib.sha256(
            json.dumps([keys, s.train_text_encoder, s.flip, s.min_snr_gamma, s.extra], default=str).encode()
        )
        for p in self.photos:
            h.update(p.caption.encode())
            h.update(hashlib.sha256(Path(p.path).read_bytes()).digest())
        return h.hexdigest()
