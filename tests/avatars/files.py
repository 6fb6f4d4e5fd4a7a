"""Small valid (and invalid) avatar files for tests: images, skeletons, LoRAs and embeddings for the tiny models."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from safetensors.numpy import save


def png(size: tuple[int, int] = (64, 48), seed: int = 0, fmt: str = "PNG") -> bytes:
    """A photo-like image: smooth colours plus noise, nothing like a skeleton."""
    rng = np.random.default_rng(seed)
    w, h = size
    gx, gy = np.meshgrid(np.linspace(60, 220, w), np.linspace(90, 200, h))
    base = np.stack([gx, gy, np.full((h, w), 150.0)], -1)
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def skeleton(size: tuple[int, int] = (96, 128)) -> bytes:
    """An OpenPose-style render: black background, saturated coloured limbs and joints."""
    img = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(img)
    limbs = [((48, 20), (48, 60), (255, 0, 0)), ((48, 30), (25, 55), (255, 170, 0)), ((48, 30), (72, 55), (0, 255, 0))]
    limbs += [((48, 60), (35, 110), (0, 85, 255)), ((48, 60), (62, 110), (170, 0, 255))]
    for a, b, colour in limbs:
        d.line([a, b], fill=colour, width=4)
        d.ellipse([a[0] - 3, a[1] - 3, a[0] + 3, a[1] + 3], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def configs(model_dir: Path) -> tuple[dict, dict]:
    """The tiny model's UNet and text-encoder configs (the shapes LoRAs and embeddings must match)."""
    unet = json.loads((Path(model_dir) / "unet" / "config.json").read_text())
    te = json.loads((Path(model_dir) / "text_encoder" / "config.json").read_text())
    return unet, te


def _pair(down_in: int, up_out: int, rank: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0, 0.1, (rank, down_in)).astype(np.float32),
        rng.normal(0, 0.1, (up_out, rank)).astype(np.float32),
    )


def lora_kohya(model_dir: Path, rank: int = 4) -> bytes:
    """kohya/A1111 names: lora_unet_<path>.lora_down.weight, .lora_up.weight, .alpha, and lora_te_ layers."""
    unet, te = configs(model_dir)
    inner, cross, hidden = unet["block_out_channels"][0], unet["cross_attention_dim"], te["hidden_size"]
    block = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
    tensors: dict[str, np.ndarray] = {}
    for module, (d_in, d_out) in {
        f"{block}_attn1_to_q": (inner, inner),
        f"{block}_attn2_to_k": (cross, inner),
        f"{block}_attn2_to_v": (cross, inner),
        # diffusers 0.42 only recognises kohya TE self_attn layers when out_proj is among them; fc1 alone loads
        "lora_te_text_model_encoder_layers_0_mlp_fc1": (hidden, te["intermediate_size"]),
    }.items():
        down, up = _pair(d_in, d_out, rank, seed=len(tensors))
        tensors[f"{module}.lora_down.weight"] = down
        tensors[f"{module}.lora_up.weight"] = up
        tensors[f"{module}.alpha"] = np.array(float(rank), dtype=np.float32)
    return save(tensors)


def lora_peft(model_dir: Path, rank: int = 4) -> bytes:
    """diffusers/peft names: unet.<path>.lora_A.weight / lora_B.weight."""
    unet, _ = configs(model_dir)
    inner, cross = unet["block_out_channels"][0], unet["cross_attention_dim"]
    block = "unet.down_blocks.0.attentions.0.transformer_blocks.0"
    tensors: dict[str, np.ndarray] = {}
    for module, (d_in, d_out) in {f"{block}.attn1.to_q": (inner, inner), f"{block}.attn2.to_k": (cross, inner)}.items():
        down, up = _pair(d_in, d_out, rank, seed=len(tensors))
        tensors[f"{module}.lora_A.weight"] = down
        tensors[f"{module}.lora_B.weight"] = up
    return save(tensors, metadata={"format": "pt"})


def embedding(model_dir: Path, vectors: int = 2) -> bytes:
    """An A1111 textual inversion: emb_params [vectors, hidden]."""
    _, te = configs(model_dir)
    rng = np.random.default_rng(7)
    return save({"emb_params": rng.normal(0, 0.02, (vectors, te["hidden_size"])).astype(np.float32)})


def random_tensors() -> bytes:
    rng = np.random.default_rng(3)
    return save({"weight": rng.normal(size=(8, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)})
