"""A tiny seeded SD3 IP-Adapter for the tiny SD3 (`engine.tiny_sd3`), in the InstantX SD3.5 IP-Adapter format.

Written under the IP-Adapter root in the layout `engine.families.sd3.ip_adapter` reads:

    IP-Adapter/sd3/ip-adapter.safetensors   image_proj.* (IPAdapterTimeImageProjection, InstantX key names)
                                            + ip_adapter.<i>.* (one SD3IPAdapterJointAttnProcessor2_0 per block)
    IP-Adapter/sd3/image_encoder/           SiglipVisionModel (hidden 32, 2 layers, 32 px, patch 8) with a
                                            SiglipImageProcessor preprocessor_config.json

The modules are diffusers' own classes built from a fixed seed, so the shapes always match what
`SD3IPAdapterMixin.load_ip_adapter` builds for the transformer; the projection's keys are written back in
the original InstantX names (`layers.<i>.0.to_q`, ...) so the real key conversion is what loads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterTimeImageProjection
from transformers import SiglipVisionConfig, SiglipVisionModel

from pictale.engine.tiny.adapters import ADAPTER_SEED, _atomic_dir, _atomic_save

SD3_IP_SEED = ADAPTER_SEED + 40
SD3_ENCODER_SEED = ADAPTER_SEED + 41
TINY_IP_QUERIES = 8
TINY_IP_HIDDEN = 64  # one head of diffusers' fixed 64-wide heads (it reads heads as to_q rows // 64)
TINY_IP_TIME_DIM = 32

# diffusers name -> InstantX name inside `layers.<i>.` (the inverse of diffusers' conversion).
_INSTANTX_NAMES = (
    ("ln0.", "0.norm1."),
    ("ln1.", "0.norm2."),
    ("attn.to_q.", "0.to_q."),
    ("attn.to_kv.", "0.to_kv."),
    ("attn.to_out.0.", "0.to_out."),
    ("adaln_norm.", "1.0."),
    ("ff.net.0.proj.", "1.1."),
    ("ff.net.2.", "1.3."),
    ("adaln_proj.", "2.1."),
)

_SIGLIP_PROCESSOR = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"height": 32, "width": 32},
}


def _seeded(seed: int, make: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


def _write_siglip_encoder(folder: Path, seed: int) -> SiglipVisionModel:
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    encoder = _seeded(seed, lambda: SiglipVisionModel(config))

    def write(tmp: Path) -> None:
        encoder.save_pretrained(tmp, safe_serialization=True)
        text = json.dumps(_SIGLIP_PROCESSOR, indent=2) + "\n"
        (tmp / "preprocessor_config.json").write_text(text, encoding="utf-8")

    _atomic_dir(folder, write)
    return encoder


def instantx_key(name: str) -> str:
    """A diffusers IPAdapterTimeImageProjection key in the InstantX file's naming."""
    if not name.startswith("layers."):
        return name
    _, idx, rest = name.split(".", 2)
    for ours, theirs in _INSTANTX_NAMES:
        if rest.startswith(ours):
            return f"layers.{idx}.{theirs}{rest[len(ours) :]}"
    raise ValueError(f"no InstantX name for {name}")


def _perturbed(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's state with every tensor moved off its init (LayerNorms at 1/0 would make some keys moot)."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return {
        name: (value + torch.randn(value.shape, generator=gen) * 0.05).contiguous()
        for name, value in module.state_dict().items()
    }


def sd3_ip_adapter_state(transformer: Any, embed_dim: int, seed: int = SD3_IP_SEED) -> dict[str, torch.Tensor]:
    """`image_proj.*` and `ip_adapter.<i>.*` tensors for `transformer` and an image encoder of width embed_dim."""
    config = transformer.config
    width = config.attention_head_dim * config.num_attention_heads
    proj = _seeded(
        seed,
        lambda: IPAdapterTimeImageProjection(
            embed_dim=embed_dim,
            output_dim=width,
            hidden_dim=TINY_IP_HIDDEN,
            heads=TINY_IP_HIDDEN // 64,
            num_queries=TINY_IP_QUERIES,
            timestep_in_dim=TINY_IP_TIME_DIM,
        ),
    )
    tensors = {f"image_proj.{instantx_key(k)}": v for k, v in _perturbed(proj, seed).items()}
    for i in range(len(transformer.attn_processors)):
        proc = _seeded(
            seed + 1 + i,
            lambda: SD3IPAdapterJointAttnProcessor2_0(
                hidden_size=width,
                ip_hidden_states_dim=width,
                head_dim=config.attention_head_dim,
                timesteps_emb_dim=TINY_IP_HIDDEN,
            ),
        )
        tensors.update({f"ip_adapter.{i}.{k}": v for k, v in _perturbed(proc, seed + 1 + i).items()})
    return tensors


def write_tiny_sd3_ip_adapter(root: Path, pipe: Any) -> Path:
    """`root/sd3/ip-adapter.safetensors` and `root/sd3/image_encoder/` for the tiny SD3 `pipe`; returns root."""
    root = Path(root)
    encoder = _write_siglip_encoder(root / "sd3" / "image_encoder", SD3_ENCODER_SEED)
    state = sd3_ip_adapter_state(pipe.transformer, encoder.config.hidden_size)
    _atomic_save(state, root / "sd3" / "ip-adapter.safetensors")
    return root
