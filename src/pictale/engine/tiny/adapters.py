"""Tiny seeded adapter files for the tiny models: IP-Adapter, OpenPose ControlNet, LoRA and an embedding.

Written in the real on-disk layouts so `engine.adapters` loads them through the same code as real files
(`reference/offline-models.md` §4-6). Weights are seeded random and non-zero (peft's B and ControlNet's
zero-convs would otherwise have no effect), so every adapter visibly changes the image. Layout under `root`:

    IP-Adapter/models/image_encoder/                 CLIPVisionModelWithProjection (hidden 32, proj 32, 32 px)
    IP-Adapter/models/ip-adapter-full-face_sd15.safetensors       full-face projection (hidden states)
    IP-Adapter/models/ip-adapter_sd15.safetensors                 basic 4-token projection (image embeds)
    IP-Adapter/sdxl_models/image_encoder/            a second tiny vision encoder (projection 48)
    IP-Adapter/sdxl_models/ip-adapter_sdxl.safetensors            basic projection for SDXL
    IP-Adapter/sdxl_models/ip-adapter-plus-face_sdxl_vit-h.safetensors   Resampler over models/image_encoder
    IP-Adapter/sd3/                  the SD3 IP-Adapter and SigLIP encoder (`tiny_sd3_adapters`, by `tiny.py`)
    ControlNet/openpose-sd15/, ControlNet/openpose-sdxl/          ControlNetModel.from_unet, zero-convs randomised
    Lora/tiny_kohya.safetensors      kohya/A1111 keys, UNet + text encoder (sd15)
    Lora/tiny_peft.safetensors       diffusers/peft keys, UNet only (sd15)
    Lora/tiny_sdxl.safetensors       diffusers/peft keys, UNet + both text encoders (sdxl)
    Lora/tiny_sd3.safetensors        diffusers/peft keys `transformer.transformer_blocks.*` (sd3)
    embeddings/tiny_ti.safetensors   A1111 `emb_params`, 2 vectors (sd15)
    embeddings/tiny_ti_sdxl.safetensors   `clip_l` + `clip_g`, 2 vectors each (sdxl)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from pictale.engine.checks.adapter_fit import cross_attention_hidden_sizes

ADAPTER_SEED = 4321
LORA_RANK = 4
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _rand(gen: torch.Generator, *shape: int, scale: float = 0.2) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen) * scale).contiguous()


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _atomic_dir(folder: Path, write: Any) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        write(tmp)
        for file in tmp.iterdir():
            file.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- IP-Adapter


def _write_image_encoder(folder: Path, seed: int, projection_dim: int) -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=projection_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(config).eval()
    processor = {
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": _CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": _CLIP_STD,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 32},
    }

    def write(tmp: Path) -> None:
        encoder.save_pretrained(tmp, safe_serialization=True)
        (tmp / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")

    _atomic_dir(folder, write)
    return encoder


def _ip_layers(unet: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
    cross = unet.config.cross_attention_dim
    out = {}
    for i, hidden in enumerate(cross_attention_hidden_sizes(unet)):
        k = 2 * i + 1
        out[f"ip_adapter.{k}.to_k_ip.weight"] = _rand(gen, hidden, cross)
        out[f"ip_adapter.{k}.to_v_ip.weight"] = _rand(gen, hidden, cross)
    return out


def _basic_proj(cross: int, embed_dim: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "image_proj.proj.weight": _rand(gen, 4 * cross, embed_dim),
        "image_proj.proj.bias": _rand(gen, 4 * cross),
        "image_proj.norm.weight": 1 + _rand(gen, cross),
        "image_proj.norm.bias": _rand(gen, cross),
    }


def _full_face_proj(cross: int, hidden: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "image_proj.proj.0.weight": _rand(gen, hidden, hidden),
        "image_proj.proj.0.bias": _rand(gen, hidden),
        "image_proj.proj.2.weight": _rand(gen, cross, hidden),
        "image_proj.proj.2.bias": _rand(gen, cross),
        "image_proj.proj.3.weight": 1 + _rand(gen, cross),
        "image_proj.proj.3.bias": _rand(gen, cross),
    }


def _plus_proj(cross: int, embed_dim: int, gen: torch.Generator, queries: int = 4) -> dict[str, torch.Tensor]:
    """The Resampler of IP-Adapter Plus in its original key names (diffusers reads heads as to_q rows // 64)."""
    hidden, inner, ff = 64, 64, 256
    out = {
        "image_proj.latents": _rand(gen, 1, queries, hidden),
        "image_proj.proj_in.weight": _rand(gen, hidden, embed_dim),
        "image_proj.proj_in.bias": _rand(gen, hidden),
        "image_proj.proj_out.weight": _rand(gen, cross, hidden),
        "image_proj.proj_out.bias": _rand(gen, cross),
        "image_proj.norm_out.weight": 1 + _rand(gen, cross),
        "image_proj.norm_out.bias": _rand(gen, cross),
    }
    for i in range(4):
        p = f"image_proj.layers.{i}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            out[f"{p}{norm}.weight"] = 1 + _rand(gen, hidden)
            out[f"{p}{norm}.bias"] = _rand(gen, hidden)
        out[f"{p}0.to_q.weight"] = _rand(gen, inner, hidden)
        out[f"{p}0.to_kv.weight"] = _rand(gen, 2 * inner, hidden)
        out[f"{p}0.to_out.weight"] = _rand(gen, hidden, inner)
        out[f"{p}1.1.weight"] = _rand(gen, ff, hidden)
        out[f"{p}1.3.weight"] = _rand(gen, hidden, ff)
    return out


def write_tiny_ip_adapter(root: Path, unets: dict[str, Any]) -> Path:
    """IP-Adapter files in the h94/IP-Adapter layout for the given {family: unet}; returns root."""
    root = Path(root)
    gen = _gen(ADAPTER_SEED)
    encoder = _write_image_encoder(root / "models" / "image_encoder", ADAPTER_SEED, projection_dim=32)
    hidden, proj = encoder.config.hidden_size, encoder.config.projection_dim
    if "sd15" in unets:
        unet = unets["sd15"]
        cross = unet.config.cross_attention_dim
        face = {**_full_face_proj(cross, hidden, gen), **_ip_layers(unet, gen)}
        _atomic_save(face, root / "models" / "ip-adapter-full-face_sd15.safetensors")
        style = {**_basic_proj(cross, proj, gen), **_ip_layers(unet, gen)}
        _atomic_save(style, root / "models" / "ip-adapter_sd15.safetensors")
    if "sdxl" in unets:
        unet = unets["sdxl"]
        cross = unet.config.cross_attention_dim
        xl_encoder = _write_image_encoder(root / "sdxl_models" / "image_encoder", ADAPTER_SEED + 1, projection_dim=48)
        style = {**_basic_proj(cross, xl_encoder.config.projection_dim, gen), **_ip_layers(unet, gen)}
        _atomic_save(style, root / "sdxl_models" / "ip-adapter_sdxl.safetensors")
        face = {**_plus_proj(cross, hidden, gen), **_ip_layers(unet, gen)}
        _atomic_save(face, root / "sdxl_models" / "ip-adapter-plus-face_sdxl_vit-h.safetensors")
    return root


# ---------------------------------------------------------------------------------------------- ControlNet


def write_tiny_controlnet(folder: Path, unet: Any, seed: int) -> Path:
    """An OpenPose-shaped ControlNet made from the UNet, its zero-convs randomised so it has an effect."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)).eval()
    gen = _gen(seed)
    zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.copy_(_rand(gen, *conv.weight.shape, scale=0.3))
            conv.bias.copy_(_rand(gen, *conv.bias.shape, scale=0.1))
    _atomic_dir(Path(folder), lambda tmp: net.save_pretrained(tmp, safe_serialization=True))
    return Path(folder)


# ---------------------------------------------------------------------------------------------- LoRA


def _attention_linears(unet: Any) -> list[tuple[str, torch.nn.Linear]]:
    targets = ("to_q", "to_k", "to_v", "to_out.0")
    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and name.endswith(targets) and ".attn" in name
    ]


def _text_linears(text_encoder: Any) -> list[tuple[str, torch.nn.Linear]]:
    targets = ("q_proj", "k_proj", "v_proj", "out_proj")
    return [
        (name, module)
        for name, module in text_encoder.named_modules()
        if isinstance(module, torch.nn.Linear) and name.endswith(targets)
    ]


def _peft_pairs(prefix: str, modules: list[tuple[str, Any]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in modules:
        out[f"{prefix}.{name}.lora_A.weight"] = _rand(gen, LORA_RANK, module.in_features, scale=0.5)
        out[f"{prefix}.{name}.lora_B.weight"] = _rand(gen, module.out_features, LORA_RANK, scale=0.5)
    return out


def write_tiny_lora_peft(path: Path, pipe: Any, seed: int, *, text_encoders: bool = False) -> Path:
    """A diffusers/peft-format LoRA (keys `unet.<module>.lora_A.weight`, SD3: `transformer.<module>...`),
    optionally with text encoder layers."""
    gen = _gen(seed)
    prefix = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    tensors = _peft_pairs(prefix, _attention_linears(getattr(pipe, prefix)), gen)
    if text_encoders:
        for attr in ("text_encoder", "text_encoder_2"):
            encoder = getattr(pipe, attr, None)
            if encoder is not None:
                tensors.update(_peft_pairs(attr, _text_linears(encoder), gen))
    _atomic_save(tensors, Path(path), metadata={"format": "pt"})
    return Path(path)


def write_tiny_lora_kohya(path: Path, pipe: Any, seed: int) -> Path:
    """A kohya/A1111-format LoRA: `lora_unet_*` (attention and 1x1 proj convs) and `lora_te_text_model_*`."""
    gen = _gen(seed)
    tensors: dict[str, torch.Tensor] = {}

    def add(key: str, module: Any) -> None:
        if isinstance(module, torch.nn.Conv2d):
            down = _rand(gen, LORA_RANK, module.in_channels, 1, 1, scale=0.5)
            up = _rand(gen, module.out_channels, LORA_RANK, 1, 1, scale=0.5)
        else:
            down = _rand(gen, LORA_RANK, module.in_features, scale=0.5)
            up = _rand(gen, module.out_features, LORA_RANK, scale=0.5)
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(float(LORA_RANK))

    for name, module in _attention_linears(pipe.unet):
        add("lora_unet_" + name.replace(".", "_"), module)
    for name, module in pipe.unet.named_modules():
        if name.endswith(("proj_in", "proj_out")) and isinstance(module, torch.nn.Conv2d):
            add("lora_unet_" + name.replace(".", "_"), module)
    for name, module in _text_linears(pipe.text_encoder):
        # transformers 5 flattens CLIPTextModel; real kohya files name the modules under `text_model`.
        add("lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_"), module)
    _atomic_save(tensors, Path(path))
    return Path(path)


# ---------------------------------------------------------------------------------------------- embeddings


def write_tiny_embedding(path: Path, pipe: Any, seed: int, vectors: int = 2) -> Path:
    """A textual-inversion embedding: A1111 `emb_params` (SD 1.5) or `clip_l` + `clip_g` (SDXL)."""
    gen = _gen(seed)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    if getattr(pipe, "text_encoder_2", None) is not None:
        width_2 = pipe.text_encoder_2.get_input_embeddings().weight.shape[-1]
        tensors = {"clip_l": _rand(gen, vectors, width, scale=1.0), "clip_g": _rand(gen, vectors, width_2, scale=1.0)}
    else:
        tensors = {"emb_params": _rand(gen, vectors, width, scale=1.0)}
    _atomic_save(tensors, Path(path))
    return Path(path)


# ---------------------------------------------------------------------------------------------- all


def write_tiny_adapters(root: Path, pipes: dict[str, Any]) -> dict[str, Path]:
    """Every tiny adapter for the given {family: pipeline} ("sd15", "sdxl" and/or "sd3") under root."""
    root = Path(root)
    sd3 = pipes.get("sd3")
    # IP-Adapter and ControlNet files are made from a UNet: the SD3 transformer gets a LoRA only.
    pipes = {family: pipe for family, pipe in pipes.items() if family != "sd3"}
    paths: dict[str, Path] = {
        "ip_adapter": write_tiny_ip_adapter(root / "IP-Adapter", {f: p.unet for f, p in pipes.items()}),
        "controlnet": root / "ControlNet",
    }
    for i, (family, pipe) in enumerate(sorted(pipes.items())):
        write_tiny_controlnet(root / "ControlNet" / f"openpose-{family}", pipe.unet, ADAPTER_SEED + 10 + i)
    if "sd15" in pipes:
        sd15 = pipes["sd15"]
        paths["lora_kohya"] = write_tiny_lora_kohya(root / "Lora" / "tiny_kohya.safetensors", sd15, ADAPTER_SEED + 20)
        paths["lora_peft"] = write_tiny_lora_peft(root / "Lora" / "tiny_peft.safetensors", sd15, ADAPTER_SEED + 21)
        paths["embedding"] = write_tiny_embedding(root / "embeddings" / "tiny_ti.safetensors", sd15, ADAPTER_SEED + 30)
    if "sdxl" in pipes:
        sdxl = pipes["sdxl"]
        lora = root / "Lora" / "tiny_sdxl.safetensors"
        paths["lora_sdxl"] = write_tiny_lora_peft(lora, sdxl, ADAPTER_SEED + 22, text_encoders=True)
        emb = root / "embeddings" / "tiny_ti_sdxl.safetensors"
        paths["embedding_sdxl"] = write_tiny_embedding(emb, sdxl, ADAPTER_SEED + 31)
    if sd3 is not None:
        paths["lora_sd3"] = write_tiny_lora_peft(root / "Lora" / "tiny_sd3.safetensors", sd3, ADAPTER_SEED + 23)
    return paths
