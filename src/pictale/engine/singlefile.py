"""diffusers state dicts -> A1111 / LDM single-file keys: the inverse of diffusers' single-file loader.

Generalised from diffusers' `scripts/convert_diffusers_to_original_stable_diffusion.py`: the number of levels
and `layers_per_block` come from the configs: the same code converts the tiny models and real SD 1.5 / SDXL.
"""

from __future__ import annotations

import re
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

StateDict = dict[str, torch.Tensor]

_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def _swap_prefix(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _unet_key(key: str, per_level: int, up_has_attn: list[bool]) -> str:
    if key.startswith(tuple(_UNET_FIXED)):
        return _swap_prefix(key, _UNET_FIXED)
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = 1 + level * per_level + j
        return (
            f"input_blocks.{n}.0.{_swap_prefix(rest, _RESNET)}" if kind == "resnets" else f"input_blocks.{n}.1.{rest}"
        )
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_level}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_swap_prefix(m[2], _RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = level * per_level + j
        return (
            f"output_blocks.{n}.0.{_swap_prefix(rest, _RESNET)}" if kind == "resnets" else f"output_blocks.{n}.1.{rest}"
        )
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(m[1])
        n = level * per_level + per_level - 1
        return f"output_blocks.{n}.{2 if up_has_attn[level] else 1}.conv.{m[2]}"
    raise ValueError(f"unexpected UNet key {key!r}")


def unet_to_ldm(state: StateDict, config: Any) -> StateDict:
    """UNet2DConditionModel weights -> `model.diffusion_model.*` keys."""
    per_level = config["layers_per_block"] + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    return {UNET_PREFIX + _unet_key(k, per_level, up_has_attn): v for k, v in state.items()}


def _vae_key(key: str, n_levels: int) -> str:
    key = key.replace("conv_norm_out.", "norm_out.")
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_swap_prefix(m[2], _VAE_ATTN)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level = n_levels - 1 - int(m[1])
        return f"decoder.up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    return key


def vae_to_ldm(state: StateDict, config: Any) -> StateDict:
    """AutoencoderKL weights -> `first_stage_model.*` keys; mid-block attention becomes 1x1 convs."""
    out: StateDict = {}
    n_levels = len(config["up_block_types"])
    for key, value in state.items():
        new = _vae_key(key, n_levels)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value.contiguous()
    return out


def clip_to_ldm(state: StateDict, prefix: str) -> StateDict:
    """HF CLIPTextModel weights -> `<prefix>*` with the `text_model.` part A1111 files carry."""
    out: StateDict = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        out[prefix + key.removeprefix("text_model.")] = value
    return out


_OPENCLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


def openclip_to_ldm(state: StateDict, prefix: str = SDXL_OPENCLIP_PREFIX) -> StateDict:
    """HF CLIPTextModelWithProjection weights -> OpenCLIP layout (fused qkv, transposed text_projection)."""
    flat = {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}
    out: StateDict = {
        prefix + "token_embedding.weight": flat.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": flat.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": flat.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": flat.pop("final_layer_norm.bias"),
        prefix + "text_projection": flat.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(k.split(".")[2]) for k in flat if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [flat.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
        for key in [k for k in flat if k.startswith(src)]:
            out[dst + _swap_prefix(key[len(src) :], _OPENCLIP_LAYER)] = flat.pop(key)
    if flat:
        raise ValueError(f"unconverted text encoder keys: {sorted(flat)[:5]}")
    return out


def pipeline_to_ldm(pipe: Any) -> StateDict:
    """An SD 1.5 or SDXL pipeline -> one A1111-style state dict (what `from_single_file` reads back)."""
    state = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), SDXL_CLIP_PREFIX))
        state.update(openclip_to_ldm(pipe.text_encoder_2.state_dict()))
    else:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), SD15_CLIP_PREFIX))
    return {k: v.detach().contiguous() for k, v in state.items()}
