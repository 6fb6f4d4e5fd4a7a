"""What one training step predicts, per family: noise/v with min-SNR on SD 1.5/SDXL, the flow velocity on FLUX.1.

Each objective turns a batch of cached latents and text embeddings plus draws from the trainer's one generator
into a per-sample loss. The draws are made on the CPU in a fixed order (latent sample, noise, [noise offset],
timestep), so a run repeats exactly and resumes bit-identically (training.md §1.7).

Choices, on purpose:
- min-SNR-γ (Hang et al. 2023) weights the x0-space error by min(SNR, γ). An ε-loss is SNR × the x0 loss, so its
  weight is min(SNR, γ)/SNR; a v-loss is (SNR + 1) × the x0 loss, so its weight is min(SNR, γ)/(SNR + 1) (what
  diffusers' text-to-image script uses; the SDXL DreamBooth script's `/SNR + 1` is not this scheme).
- FLUX.1: rectified flow, z_t = (1 - σ) x + σ ε, target ε - x (§1.5). σ is drawn logit-normal(0, 1) (the SD3
  paper's best sampler; it spends the steps on the middle noise levels where layout and identity form) and then
  shifted exactly as the pipeline shifts its sampling schedule for that image size (dynamic `mu` on dev, the static
  `shift` otherwise), so training sees the noise levels inference visits. Loss weights are uniform: the density
  already does the weighting, and a second weighting would double-count it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FLUX_MAX_SEQUENCE = 512  # pictale's T5 length at inference (engine: the same prompt embeddings)


_STORAGE_ONLY = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}


def compute_dtype(model) -> torch.dtype:
    """The dtype a model computes in: its weights' dtype, except weights stored in fp8 (layerwise casting), which
    are cast up to their compute dtype when used (the LoRA's own weights are in that dtype or fp32)."""
    found = [p.dtype for p in model.parameters() if p.dtype not in _STORAGE_ONLY and not p.requires_grad]
    if found:
        return found[0]
    return next(p.dtype for p in model.parameters() if p.dtype not in _STORAGE_ONLY)


def encode_captions(pipe, family: str, captions: list[str], device) -> list[dict]:
    """Text conditioning per caption through the pipeline's own `encode_prompt` (the same code as inference)."""
    out = []
    for caption in captions:
        if family == "flux":
            pe, pooled, text_ids = pipe.encode_prompt(
                caption, caption, device=device, max_sequence_length=FLUX_MAX_SEQUENCE
            )
            out.append({"pe": pe, "pooled": pooled, "text_ids": text_ids})
        elif family == "sdxl":
            pe, _, pooled, _ = pipe.encode_prompt(caption, device=device, do_classifier_free_guidance=False)
            out.append({"pe": pe, "pooled": pooled})
        else:
            pe, _ = pipe.encode_prompt(caption, device, 1, False)
            out.append({"pe": pe})
    return out


def stack_text(embeds: list[dict]) -> dict:
    """One batch of text conditioning from per-sample entries (Flux's text ids are shared)."""
    out = {k: torch.cat([e[k] for e in embeds]) for k in embeds[0] if k != "text_ids"}
    if "text_ids" in embeds[0]:
        out["text_ids"] = embeds[0]["text_ids"]
    return out


class NoiseObjective:
    """SD 1.5 / SDXL: DDPM forward process from the model's scheduler config; epsilon or v target; min-SNR-γ."""

    def __init__(self, pipe, family: str, *, min_snr_gamma: float | None, noise_offset: float = 0.0) -> None:
        from diffusers import DDPMScheduler

        self.family, self.gamma, self.noise_offset = family, min_snr_gamma, noise_offset
        self.sched = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction = self.sched.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"cannot train a {self.prediction!r}-prediction model")
        self.scaling = float(pipe.vae.config.scaling_factor)
        self.timesteps = int(self.sched.config.num_train_timesteps)
        alphas = self.sched.alphas_cumprod.double()
        self.snr = (alphas / (1 - alphas)).float()

    def draw(self, mean: torch.Tensor, std: torch.Tensor, g: torch.Generator) -> dict:
        """The random part of a step, drawn on the CPU from g in a fixed order."""
        b = mean.shape[0]
        d = {"eps_z": torch.randn(mean.shape, generator=g), "noise": torch.randn(mean.shape, generator=g)}
        if self.noise_offset:
            d["offset"] = torch.randn((b, mean.shape[1], 1, 1), generator=g)
        d["t"] = torch.randint(0, self.timesteps, (b,), generator=g)
        return d

    def loss(self, model, mean, std, text: dict, draws: dict, sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Per-sample weighted MSE, shape (B,)."""
        dev = mean.device
        z = (mean + std * draws["eps_z"].to(dev)) * self.scaling
        noise = draws["noise"].to(dev)
        if "offset" in draws:
            noise = noise + self.noise_offset * draws["offset"].to(dev)
        t = draws["t"].to(dev)
        noisy = self.sched.add_noise(z, noise, t)
        target = noise if self.prediction == "epsilon" else self.sched.get_velocity(z, noise, t)
        kwargs = {}
        if self.family == "sdxl":
            ids = torch.tensor([[h, w, 0, 0, h, w] for h, w in sizes], dtype=torch.float32, device=dev)
            kwargs["added_cond_kwargs"] = {"text_embeds": text["pooled"], "time_ids": ids.to(text["pooled"].dtype)}
        dtype = compute_dtype(model)
        pred = model(noisy.to(dtype), t, text["pe"].to(dtype), **kwargs).sample
        mse = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.gamma is None:
            return mse
        snr = self.snr.to(dev)[t].clamp(min=1e-8)  # zero-terminal-SNR schedules: t = T-1 has SNR 0
        clipped = torch.minimum(snr, torch.full_like(snr, self.gamma))
        weight = clipped / snr if self.prediction == "epsilon" else clipped / (snr + 1)
        return mse * weight


class FlowObjective:
    """FLUX.1 (dev: guidance embedding): packed latents, image ids, shifted logit-normal σ, target ε − x."""

    def __init__(self, pipe, *, guidance: float = 3.5) -> None:
        self.pipe = pipe
        cfg = pipe.scheduler.config
        self.cfg = cfg
        self.scaling = float(pipe.vae.config.scaling_factor)
        self.shift_factor = float(getattr(pipe.vae.config, "shift_factor", 0.0) or 0.0)
        self.guidance = guidance if pipe.transformer.config.guidance_embeds else None

    def draw(self, mean: torch.Tensor, std: torch.Tensor, g: torch.Generator) -> dict:
        b = mean.shape[0]
        return {
            "eps_z": torch.randn(mean.shape, generator=g),
            "noise": torch.randn(mean.shape, generator=g),
            "u": torch.sigmoid(torch.randn((b,), generator=g)),  # logit-normal(0, 1)
        }

    def sigmas(self, u: torch.Tensor, seq_len: int) -> torch.Tensor:
        """The inference pipeline's time shift of u for an image of `seq_len` packed tokens."""
        cfg = self.cfg
        if cfg.get("use_dynamic_shifting", False):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            mu = calculate_shift(
                seq_len,
                cfg.get("base_image_seq_len", 256),
                cfg.get("max_image_seq_len", 4096),
                cfg.get("base_shift", 0.5),
                cfg.get("max_shift", 1.15),
            )
            return math.exp(mu) / (math.exp(mu) + (1 / u - 1))
        shift = float(cfg.get("shift", 1.0))
        return shift * u / (1 + (shift - 1) * u)

    def loss(self, model, mean, std, text: dict, draws: dict, sizes: list[tuple[int, int]]) -> torch.Tensor:
        dev = mean.device
        b, c, h, w = mean.shape
        x = ((mean + std * draws["eps_z"].to(dev)) - self.shift_factor) * self.scaling
        noise = draws["noise"].to(dev)
        pack = type(self.pipe)._pack_latents
        x, noise = pack(x, b, c, h, w), pack(noise, b, c, h, w)
        sigma = self.sigmas(draws["u"], x.shape[1]).to(dev)
        s = sigma.view(b, 1, 1)
        noisy = (1 - s) * x + s * noise
        dtype = compute_dtype(model)
        ids = type(self.pipe)._prepare_latent_image_ids(b, h // 2, w // 2, dev, dtype)
        guidance = None if self.guidance is None else torch.full((b,), self.guidance, device=dev, dtype=torch.float32)
        pred = model(
            hidden_states=noisy.to(dtype),
            timestep=sigma.to(dtype),
            guidance=guidance,
            pooled_projections=text["pooled"].to(dtype),
            encoder_hidden_states=text["pe"].to(dtype),
            txt_ids=text["text_ids"],
            img_ids=ids,
            return_dict=False,
        )[0]
        return F.mse_loss(pred.float(), (noise - x).float(), reduction="none").mean(dim=(1, 2))
