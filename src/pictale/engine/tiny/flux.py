"""Tiny seeded FLUX.1 pipelines (schnell, dev and Kontext) in the diffusers layout, for tests and the offline demo.

The recipe of `shared/reference/flux.md` section 8: CLIP-L-like encoder (pooled output only), T5 (d_model 64),
a two-block FluxTransformer2DModel (one double-stream, two single-stream), the 16-channel VAE with Flux's scaling
and shift factors. schnell and dev differ as the real ones do: the guidance embedding and the scheduler's shift.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

from pictale.engine.tiny import TINY_SEED, _save_folder, _seeded, _text_encoder, _vae, tiny_tokenizer
from pictale.engine.tiny.sd3 import _t5_encoder, tiny_t5_tokenizer

TINY_FLUX_NAMES = {"schnell": "tiny-flux-schnell", "dev": "tiny-flux-dev", "kontext": "tiny-flux-kontext"}
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}


def flux_scheduler(variant: str) -> FlowMatchEulerDiscreteScheduler:
    """schnell: no shift (timestep-distilled, 4 steps); dev: shift 3 with resolution-dependent dynamic shifting."""
    if variant == "schnell":  # dev and Kontext share dev's schedule
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_tiny_flux(variant: str = "schnell", seed: int = TINY_SEED) -> FluxPipeline:
    """A FLUX.1-shaped pipeline, seeded; "dev" has the distilled-guidance embedding, "schnell" not, and "kontext"
    is dev's transformer in a FluxKontextPipeline (reference-image editing), as FLUX.1 Kontext [dev] is."""
    if variant not in TINY_FLUX_NAMES:
        raise ValueError(f"variant must be one of {sorted(TINY_FLUX_NAMES)}, got {variant!r}")
    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 4 x the VAE's 16 latent channels (the pipeline packs 2x2 patches)
            num_layers=1,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=64,  # = the T5's d_model
            pooled_projection_dim=32,  # = the CLIP encoder's width
            guidance_embeds=variant != "schnell",
            axes_dims_rope=(4, 6, 6),  # sums to the head dim
        ),
    )
    vae = _vae(seed + 1, FLUX_VAE["scaling_factor"], 16, shift_factor=FLUX_VAE["shift_factor"],
               use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
    cls = FluxKontextPipeline if variant == "kontext" else FluxPipeline
    return cls(
        scheduler=flux_scheduler(variant),
        vae=vae,
        text_encoder=_text_encoder(tokenizer, seed + 2, hidden=32, act="quick_gelu", with_projection=False),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, seed + 3),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def write_tiny_flux(root: Path, variant: str = "schnell", seed: int = TINY_SEED) -> tuple[Path, FluxPipeline]:
    """Build the tiny Flux `variant` and save it as `root/tiny-flux-VARIANT/` (diffusers layout, safetensors)."""
    pipe = build_tiny_flux(variant, seed)
    folder = Path(root) / TINY_FLUX_NAMES[variant]
    _save_folder(pipe, folder)
    return folder, pipe
