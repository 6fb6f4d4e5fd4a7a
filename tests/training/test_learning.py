"""THE LEARNING CHECK (training.md §1.6): a LoRA trained on pattern A moves generations toward A, not toward B.

Measured in latent space, because the random tiny VAE washes out pixel and CLIP signals (§1.6), on a tiny SD 1.5
UNet pre-warmed to draw discs (a stand-in for a base model that already draws). A = a red disc top-left, B = the
same disc bottom-right; one LoRA on each, same seeds; both loaded from their kohya files into one fresh pipeline;
8 seeds, 20 steps, CFG 1, at weights (0, 0), (1, 0), (0, 1).

Measures (mean over the 8 seeds) and thresholds, those §1.6 suggests:
- d_A: MSE of the generated latent to the nearest training-A latent. Asserted: d_A(A@1) < d_A(base).
- r_A: best Pearson correlation with a training-A latent. Asserted: r_A(A@1) > r_A(base) + 0.05.
- cos(z_A@1 - z_base, muA - muB): movement along the A-B direction. Asserted: mean > 0.1 (chance ~ 0 +- 0.06).
- cos(z_A@1 - z_B@1, muA - muB): the two LoRAs pull apart along it. Asserted: mean > 0.2.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from pictale.training.export import save_kohya
from pictale.training.loop import LoraTrainer
from pictale.training.spec import PreparedPhoto
from tests.training.helpers import load, spec_for

SIZE = 64
CAPTION = "photo of sks disc"


def _disc(rs, centre, colour, brightness) -> Image.Image:
    bg = np.clip(rs.rand(3) * 0.3 + brightness, 0, 1)
    img = Image.new("RGB", (SIZE, SIZE), tuple(int(c * 255) for c in bg))
    cx, cy, r = centre[0] * SIZE, centre[1] * SIZE, 0.17 * SIZE
    ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    arr = np.asarray(img, dtype=np.float32) + rs.randn(SIZE, SIZE, 3) * 8
    return Image.fromarray(np.clip(arr, 0, 255).astype("uint8"))


def _pattern(folder, name, centre, count=6) -> list[PreparedPhoto]:
    rs = np.random.RandomState(ord(name))
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(count):
        path = folder / f"{name}{i}.png"
        _disc(rs, centre, (int(200 + 50 * rs.rand()), 30, 30), 0.2 + 0.3 * rs.rand()).save(path)
        photos.append(PreparedPhoto(str(path), CAPTION, path.name, SIZE, SIZE))
    return photos


def _pixels(path) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


@torch.no_grad()
def _raw_means(pipe, images: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([pipe.vae.encode(x).latent_dist.mean for x in images])


def _prewarm(pipe, tmp_path) -> None:
    """Full fine-tune of the tiny UNet on generic discs (anywhere, any colour): 300 steps, batch 8, lr 2e-3."""
    rs = np.random.RandomState(3)
    generic = []
    for _ in range(48):
        img = _disc(rs, rs.rand(2) * 0.6 + 0.2, tuple(int(c) for c in rs.randint(0, 255, 3)), 0.2 + 0.4 * rs.rand())
        generic.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None])
    means = _raw_means(pipe, generic)
    pipe.vae.register_to_config(scaling_factor=float(1 / means.std()))  # SD's 0.18215 belongs to SD's VAE (§1.6)
    z0 = means * pipe.vae.config.scaling_factor
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        pe, _ = pipe.encode_prompt("photo of a disc", "cpu", 1, False)
    unet = pipe.unet
    unet.requires_grad_(True).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(z0), (8,), generator=g)
        z = z0[idx]
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (8,), generator=g)
        pred = unet(sched.add_noise(z, noise, t), t, pe.expand(8, -1, -1)).sample
        F.mse_loss(pred, noise).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    unet.requires_grad_(False).eval()


def _train(base, tiny_models, photos, tmp_path, name):
    pipe = copy.deepcopy(base)
    spec = spec_for(
        tiny_models,
        "sd15",
        rank=8,
        alpha=8.0,
        steps=200,
        batch_size=4,
        min_snr_gamma=None,
        extra={"targets": "all", "latent_sample": False},  # the tiny VAE's posterior std is noise (§1.6)
    )
    trainer = LoraTrainer(pipe, spec, photos, tmp_path / name, device="cpu")
    trainer.prepare()
    trainer.step_chunk(spec.steps)
    return save_kohya(trainer, tmp_path / f"{name}.safetensors")


def _pearson_best(z: torch.Tensor, refs: torch.Tensor) -> float:
    a = (z.flatten() - z.mean()) / z.std()
    b = refs.flatten(1)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    return float((b @ a / (a.numel() - 1)).max())


def test_lora_moves_generations_toward_its_pattern_in_latent_space(tiny_models, tmp_path):
    torch.set_num_threads(1)
    base = load(tiny_models, "sd15")
    _prewarm(base, tmp_path)
    photos_a = _pattern(tmp_path / "A", "A", (0.31, 0.31))
    photos_b = _pattern(tmp_path / "B", "B", (0.69, 0.69))
    file_a = _train(base, tiny_models, photos_a, tmp_path, "A")
    file_b = _train(base, tiny_models, photos_b, tmp_path, "B")

    scale = base.vae.config.scaling_factor
    lat_a = _raw_means(base, [_pixels(p.path) for p in photos_a]) * scale
    lat_b = _raw_means(base, [_pixels(p.path) for p in photos_b]) * scale
    direction = (lat_a.mean(0) - lat_b.mean(0)).flatten()

    pipe = copy.deepcopy(base)
    pipe.load_lora_weights(str(file_a), adapter_name="a")
    pipe.load_lora_weights(str(file_b), adapter_name="b")
    z = {}
    for label, weights in (("base", [0.0, 0.0]), ("A", [1.0, 0.0]), ("B", [0.0, 1.0])):
        pipe.set_adapters(["a", "b"], weights)
        with torch.no_grad():
            z[label] = pipe(
                [CAPTION] * 8,
                width=SIZE,
                height=SIZE,
                num_inference_steps=20,
                guidance_scale=1.0,
                generator=[torch.Generator().manual_seed(s) for s in range(8)],
                output_type="latent",
            ).images

    def d_a(zs):
        return float(np.mean([((lat_a - zi[None]) ** 2).mean(dim=(1, 2, 3)).min() for zi in zs]))

    def r_a(zs):
        return float(np.mean([_pearson_best(zi, lat_a) for zi in zs]))

    cos_base = F.cosine_similarity((z["A"] - z["base"]).flatten(1), direction[None]).mean()
    cos_ab = F.cosine_similarity((z["A"] - z["B"]).flatten(1), direction[None]).mean()
    figures = {
        "d_A base": d_a(z["base"]),
        "d_A A@1": d_a(z["A"]),
        "r_A base": r_a(z["base"]),
        "r_A A@1": r_a(z["A"]),
        "cos(A-base)": float(cos_base),
        "cos(A-B)": float(cos_ab),
    }
    print(figures)
    assert figures["d_A A@1"] < figures["d_A base"], figures
    assert figures["r_A A@1"] > figures["r_A base"] + 0.05, figures
    assert figures["cos(A-base)"] > 0.1, figures
    assert figures["cos(A-B)"] > 0.2, figures
