"""Tiny seeded adapter files for the tiny FLUX.1 models (`engine.tiny.flux`), in the formats people download.

Written under `root` in the layouts `engine.families.flux` reads (facts: `shared/reference/flux.md` §4-6):

    Lora/tiny_flux_peft.safetensors       diffusers/peft keys `transformer.<module>.lora_A/B.weight` (diffusers'
                                          scripts): double blocks and the single blocks' `proj_out`
    Lora/tiny_flux_kohya.safetensors      the same weights in kohya BFL names (`lora_unet_double_blocks_0_img_attn_qkv`,
                                          fused q/k/v as concatenated downs and block-diagonal ups, alpha 3r;
                                          `single_blocks_<i>_linear2`): loads to the same image as the peft file.
                                          No `linear1`: diffusers splits it with the real width 3072 hard-coded
    Lora/tiny_flux_aitoolkit.safetensors  peft keys with `.alpha` scalars (alpha = r/2), single blocks' q/k/v and
                                          `proj_mlp` too (ai-toolkit's layout)
    Lora/tiny_flux_xlabs.safetensors      XLabs keys `double_blocks.<i>.processor.{qkv,proj}_lora{1,2}.{down,up}.weight`
    IP-Adapter/flux/ip_adapter.safetensors   XLabs IP-Adapter: `ip_adapter_proj_model.{proj,norm}.*` (4 tokens) and
                                          `double_blocks.<i>.processor.ip_adapter_double_stream_{k,v}_proj.*`
    IP-Adapter/flux/image_encoder/        CLIPVisionModelWithProjection (hidden 32, projection 32, 32 px)
    ControlNet/flux-union/                FluxControlNetModel (1 double, 1 single block, `num_mode` 10), diffusers
                                          folder; its zero-initialised output layers are seeded so it has an effect

Every weight is seeded and non-zero, so each adapter visibly changes the image; every call writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import FluxControlNetModel

from pictale.engine.families.support import FLUX_CONTROLNET, FLUX_IP_ENCODER, FLUX_IP_WEIGHTS
from pictale.engine.tiny.adapters import ADAPTER_SEED, LORA_RANK, _atomic_dir, _atomic_save, _gen, _rand
from pictale.engine.tiny.adapters import _write_image_encoder as write_clip_image_encoder

FLUX_ADAPTER_SEED = ADAPTER_SEED + 60
FLUX_LORA_FILES = {
    "lora_flux_peft": "tiny_flux_peft.safetensors",
    "lora_flux_kohya": "tiny_flux_kohya.safetensors",
    "lora_flux_aitoolkit": "tiny_flux_aitoolkit.safetensors",
    "lora_flux_xlabs": "tiny_flux_xlabs.safetensors",
}
UNION_MODES = 10

# diffusers double-block module -> kohya BFL name inside `lora_unet_double_blocks_<i>_` (one to one, alpha = r).
_KOHYA_DOUBLE = {
    "attn.to_out.0": "img_attn_proj",
    "ff.net.0.proj": "img_mlp_0",
    "ff.net.2": "img_mlp_2",
    "norm1.linear": "img_mod_lin",
    "attn.to_add_out": "txt_attn_proj",
    "ff_context.net.0.proj": "txt_mlp_0",
    "ff_context.net.2": "txt_mlp_2",
    "norm1_context.linear": "txt_mod_lin",
}
_KOHYA_QKV = {"img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
              "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}  # fmt: skip
_SINGLE_ATTN = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")


def _linear(transformer: Any, name: str) -> torch.nn.Linear:
    module = transformer.get_submodule(name)
    module = getattr(module, "base_layer", module)  # a LoRA may be loaded on it already
    assert isinstance(module, torch.nn.Linear), name
    return module


def flux_lora_modules(transformer: Any, *, single_attention: bool = False) -> list[str]:
    """Module names of the tiny Flux transformer a test LoRA targets: all of the double blocks' linears kohya can
    name, each single block's `proj_out` (kohya `linear2`), and with `single_attention` its q/k/v/`proj_mlp`."""
    names = []
    for i in range(len(transformer.transformer_blocks)):
        qkv = [m for group in _KOHYA_QKV.values() for m in group]
        names += [f"transformer_blocks.{i}.{m}" for m in (*qkv, *_KOHYA_DOUBLE)]
    for i in range(len(transformer.single_transformer_blocks)):
        extra = _SINGLE_ATTN if single_attention else ()
        names += [f"single_transformer_blocks.{i}.{m}" for m in (*extra, "proj_out")]
    return names


def flux_lora_pairs(transformer: Any, seed: int, **kw: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A [r, in], B [out, r])}, seeded, for `flux_lora_modules(transformer, **kw)`."""
    gen = _gen(seed)
    pairs = {}
    for name in flux_lora_modules(transformer, **kw):
        linear = _linear(transformer, name)
        pairs[name] = (_rand(gen, LORA_RANK, linear.in_features, scale=0.4),
                       _rand(gen, linear.out_features, LORA_RANK, scale=0.4))  # fmt: skip
    return pairs


def peft_state(pairs: dict, alpha: float | None = None) -> dict[str, torch.Tensor]:
    """diffusers/peft keys `transformer.<module>.lora_A/B.weight` (+ `.alpha` scalars as ai-toolkit writes)."""
    out = {}
    for name, (down, up) in pairs.items():
        out[f"transformer.{name}.lora_A.weight"] = down
        out[f"transformer.{name}.lora_B.weight"] = up
        if alpha is not None:
            out[f"transformer.{name}.alpha"] = torch.tensor(float(alpha))
    return out


def kohya_state(pairs: dict) -> dict[str, torch.Tensor]:
    """The same LoRA in kohya BFL names; diffusers converts it back exactly (flux.md §4)."""
    out: dict[str, torch.Tensor] = {}

    def put(key: str, down: torch.Tensor, up: torch.Tensor, alpha: int) -> None:
        out[f"{key}.lora_down.weight"] = down.contiguous()
        out[f"{key}.lora_up.weight"] = up.contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(alpha))

    for name, (down, up) in pairs.items():
        block, idx, module = name.split(".", 2)
        if block == "transformer_blocks" and module in _KOHYA_DOUBLE:
            put(f"lora_unet_double_blocks_{idx}_{_KOHYA_DOUBLE[module]}", down, up, LORA_RANK)
        elif block == "single_transformer_blocks" and module == "proj_out":
            put(f"lora_unet_single_blocks_{idx}_linear2", down, up, LORA_RANK)
        elif block == "single_transformer_blocks":
            raise ValueError(f"{name}: kohya's fused linear1 cannot be written for a tiny model")
    for i in {int(name.split(".")[1]) for name in pairs if name.startswith("transformer_blocks.")}:
        for fused, parts in _KOHYA_QKV.items():
            three = [pairs[f"transformer_blocks.{i}.{m}"] for m in parts]
            down = torch.cat([d for d, _ in three], dim=0)
            up = torch.block_diag(*[u for _, u in three])
            put(f"lora_unet_double_blocks_{i}_{fused}", down, up, 3 * LORA_RANK)
    return out


def xlabs_state(transformer: Any, seed: int) -> dict[str, torch.Tensor]:
    """An XLabs-format LoRA: per double block `qkv_lora1/2` (image/text q, k, v, one shared down) and `proj_lora1/2`."""
    gen = _gen(seed)
    width = transformer.inner_dim
    out = {}
    for i in range(len(transformer.transformer_blocks)):
        for lora, rows in (("qkv_lora1", 3 * width), ("qkv_lora2", 3 * width), ("proj_lora1", width),
                           ("proj_lora2", width)):  # fmt: skip
            out[f"double_blocks.{i}.processor.{lora}.down.weight"] = _rand(gen, LORA_RANK, width, scale=0.4)
            out[f"double_blocks.{i}.processor.{lora}.up.weight"] = _rand(gen, rows, LORA_RANK, scale=0.4)
    return out


def write_tiny_flux_loras(folder: Path, pipe: Any, seed: int = FLUX_ADAPTER_SEED) -> dict[str, Path]:
    """The four tiny Flux LoRA files in `folder`; {key: path} with the keys of FLUX_LORA_FILES."""
    transformer = pipe.transformer
    pairs = flux_lora_pairs(transformer, seed)
    states = {
        "lora_flux_peft": peft_state(pairs),
        "lora_flux_kohya": kohya_state(pairs),
        "lora_flux_aitoolkit": peft_state(flux_lora_pairs(transformer, seed + 1, single_attention=True), LORA_RANK / 2),
        "lora_flux_xlabs": xlabs_state(transformer, seed + 2),
    }
    paths = {}
    for key, state in states.items():
        paths[key] = Path(folder) / FLUX_LORA_FILES[key]
        _atomic_save(state, paths[key], metadata={"format": "pt"} if key != "lora_flux_kohya" else None)
    return paths


# ---------------------------------------------------------------------------------------------- IP-Adapter


def xlabs_ip_adapter_state(transformer: Any, embed_dim: int, seed: int) -> dict[str, torch.Tensor]:
    """XLabs Flux IP-Adapter tensors for `transformer` and an image encoder whose `image_embeds` are embed_dim wide."""
    gen = _gen(seed)
    cross, width = transformer.config.joint_attention_dim, transformer.inner_dim
    out = {
        "ip_adapter_proj_model.proj.weight": _rand(gen, 4 * cross, embed_dim),
        "ip_adapter_proj_model.proj.bias": _rand(gen, 4 * cross),
        "ip_adapter_proj_model.norm.weight": 1 + _rand(gen, cross),
        "ip_adapter_proj_model.norm.bias": _rand(gen, cross),
    }
    for i in range(len(transformer.transformer_blocks)):
        for kv in ("k", "v"):
            key = f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj"
            out[f"{key}.weight"] = _rand(gen, width, cross, scale=0.5)
            out[f"{key}.bias"] = _rand(gen, width)
    return out


def write_tiny_flux_ip_adapter(root: Path, pipe: Any, seed: int = FLUX_ADAPTER_SEED + 10) -> Path:
    """`root/flux/ip_adapter.safetensors` and `root/flux/image_encoder/` for the tiny Flux `pipe`; returns root."""
    root = Path(root)
    encoder = write_clip_image_encoder(root / FLUX_IP_ENCODER, seed, projection_dim=32)
    state = xlabs_ip_adapter_state(pipe.transformer, encoder.config.projection_dim, seed + 1)
    _atomic_save(state, root / FLUX_IP_WEIGHTS)
    return root


# ---------------------------------------------------------------------------------------------- ControlNet


def build_tiny_flux_controlnet(pipe: Any, seed: int, num_mode: int | None = UNION_MODES) -> FluxControlNetModel:
    """A union ControlNet shaped like the tiny transformer (`num_mode` None: Union-Pro-2.0 style, no mode
    embedding), every zero-initialised tensor given seeded values."""
    config = pipe.transformer.config
    shape = {k: config[k] for k in ("patch_size", "in_channels", "attention_head_dim", "num_attention_heads",
                                    "joint_attention_dim", "pooled_projection_dim", "guidance_embeds")}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FluxControlNetModel(
            **shape, num_layers=1, num_single_layers=1, axes_dims_rope=tuple(config.axes_dims_rope), num_mode=num_mode
        ).eval()
    gen = _gen(seed)
    with torch.no_grad():
        for _name, tensor in net.state_dict().items():
            if not tensor.abs().max():
                tensor.copy_(_rand(gen, *tensor.shape, scale=0.3))
    return net


def write_tiny_flux_controlnet(folder: Path, pipe: Any, seed: int = FLUX_ADAPTER_SEED + 20, **kw: Any) -> Path:
    net = build_tiny_flux_controlnet(pipe, seed, **kw)
    _atomic_dir(Path(folder), lambda tmp: net.save_pretrained(tmp, safe_serialization=True))
    return Path(folder)


# ---------------------------------------------------------------------------------------------- all


def write_tiny_flux_adapters(root: Path, pipe: Any) -> dict[str, Path]:
    """Every tiny Flux adapter for the tiny Flux `pipe` under root: Lora/, IP-Adapter/flux/, ControlNet/flux-union/.

    Returns {"lora_flux_peft" | "lora_flux_kohya" | "lora_flux_aitoolkit" | "lora_flux_xlabs": file,
    "ip_adapter": IP-Adapter root, "controlnet": ControlNet root, "controlnet_flux": the union folder}.
    """
    root = Path(root)
    paths = write_tiny_flux_loras(root / "Lora", pipe)
    paths["ip_adapter"] = write_tiny_flux_ip_adapter(root / "IP-Adapter", pipe)
    paths["controlnet"] = root / "ControlNet"
    paths["controlnet_flux"] = write_tiny_flux_controlnet(root / "ControlNet" / FLUX_CONTROLNET, pipe)
    return paths
