"""Tiny seeded SD 1.5-, SDXL- and SD3-style pipelines built from configs, written in the standard on-disk layouts.

They stand in for real checkpoints in tests and for the offline demo model: the `small` preset of
`reference/offline-models.md` (UNet channels (32, 64), GroupNorm 32, VAE factor 8, 64 px by default) with a
tokenizer trained on a few prompts. Every call gives byte-identical files.

Layout written by `write_tiny_models(root)`:

    root/tiny-sd15/                diffusers folder          root/tiny-sdxl/              diffusers folder
    root/tiny-sd15.safetensors     A1111 single file         root/tiny-sdxl.safetensors   A1111 single file
    root/tiny-sd15.config/         its config-only dir       root/tiny-sdxl.config/       its config-only dir
    root/tiny-sd3/                 diffusers folder only (SD3 loads from folders: see `engine.tiny.sd3`)
    root/tiny-flux-{schnell,dev,kontext}/   FLUX.1 diffusers folders (`engine.tiny.flux`)

A `<stem>.config/` directory beside a single file is where `engine.models.load_pipeline` looks for that file's
diffusers configs before falling back to the packaged SD 1.5 / SDXL configs.

It also writes the tiny adapters (IP-Adapter/, ControlNet/, Lora/, embeddings/): see `engine.tiny_adapters`,
and the tiny SD3 IP-Adapter (IP-Adapter/sd3/): see `engine.tiny_sd3_adapters`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from pictale.engine.clip_tokenizer import EOS, clip_vocab, train_tiny_merges
from pictale.engine.configs import packaged_config_dir
from pictale.engine.demo.layout import DEMO_FOLDER
from pictale.engine.models import CONFIG_DIR_SUFFIX
from pictale.engine.singlefile import pipeline_to_ldm
from pictale.engine.tiny.adapters import write_tiny_adapters

TINY_SEED = 1234
TINY_SD15_NAME = "tiny-sd15"
TINY_SDXL_NAME = "tiny-sdxl"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


@lru_cache
def _tiny_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    merges = train_tiny_merges()
    return clip_vocab(merges), tuple(merges)


def tiny_tokenizer(pad_token: str = EOS) -> CLIPTokenizer:
    """A CLIP tokenizer with a small trained BPE vocabulary (720 tokens; SDXL's second one pads with "!")."""
    vocab, merges = _tiny_vocab()
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)
    assert len(tokenizer) > 2, "tiny tokenizer came out empty"
    return tokenizer


def _seeded(seed: int, make: Any) -> Any:
    """Build one component from a fixed seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make()
    return module.eval()


def _text_encoder(tokenizer: CLIPTokenizer, seed: int, *, hidden: int, act: str, with_projection: bool) -> Any:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return _seeded(seed, lambda: cls(config))


def _vae(seed: int, scaling_factor: float, latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    """The tiny VAE (SD3's has 16 latent channels, a shift factor and no quant convs: `extra`)."""
    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=32,
            sample_size=64,
            scaling_factor=scaling_factor,
            **extra,
        ),
    )


def _scheduler_config(family: str) -> dict[str, Any]:
    path = packaged_config_dir(family) / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text(encoding="utf-8"))


def build_tiny_sd15(seed: int = TINY_SEED, *, text_width: int = 32) -> StableDiffusionPipeline:
    """An SD 1.5-shaped pipeline (CLIP-L-like text encoder, 4-channel UNet) with seeded random weights.

    `text_width` (the text encoder's width, the UNet's cross-attention width) makes an SD 1.5 of other shapes
    than the demo's: what a real SD 1.5 is to the demo's adapters, in tests."""
    tokenizer = tiny_tokenizer()
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=text_width,
            attention_head_dim=4,
        ),
    )
    return StableDiffusionPipeline(
        vae=_vae(seed + 1, 0.18215),
        text_encoder=_text_encoder(tokenizer, seed + 2, hidden=text_width, act="quick_gelu", with_projection=False),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(_scheduler_config("sd15")),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(seed: int = TINY_SEED) -> StableDiffusionXLPipeline:
    """An SDXL-shaped pipeline: two text encoders (hidden 32 and 64), text_time conditioning, seeded."""
    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_tokenizer(pad_token="!")
    # Distinct hidden sizes matter: diffusers' single-file loader tells the two encoders apart by width.
    text_encoder = _text_encoder(tokenizer, seed + 2, hidden=32, act="quick_gelu", with_projection=False)
    text_encoder_2 = _text_encoder(tokenizer_2, seed + 3, hidden=64, act="gelu", with_projection=True)
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            norm_num_groups=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2),
            use_linear_projection=True,
            cross_attention_dim=32 + 64,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        ),
    )
    return StableDiffusionXLPipeline(
        vae=_vae(seed + 1, 0.13025),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(_scheduler_config("sdxl")),
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _save_folder(pipe: Any, folder: Path) -> None:
    """save_pretrained into a fresh sibling temp dir, then move it into place (no half-written folders)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from other local users
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_config_dir(folder: Path, config_dir: Path) -> Path:
    """Copy a diffusers folder without its weights: model_index.json, */config.json and tokenizer files."""
    if config_dir.exists():
        shutil.rmtree(config_dir)
    shutil.copytree(folder, config_dir, ignore=lambda _d, names: [n for n in names if n.endswith(_WEIGHT_SUFFIXES)])
    return config_dir


def write_tiny_models(root: Path) -> dict[str, Path]:
    """Write tiny SD 1.5, SDXL and SD3 models under root: folders, A1111 single files, config-only dirs, adapters.

    Keys: sd15, sdxl, sd3, flux_schnell, flux_dev, flux_kontext (folders), {sd15,sdxl}_single,
    {sd15,sdxl}_config, the adapters' keys, and clip
    (the tiny CLIP scorer of book pages).
    """
    from pictale.engine.tiny.clip import write_tiny_clip
    from pictale.engine.tiny.flux import write_tiny_flux
    from pictale.engine.tiny.flux_adapters import write_tiny_flux_adapters
    from pictale.engine.tiny.sd3 import write_tiny_sd3  # it builds on this module
    from pictale.engine.tiny.sd3_adapters import write_tiny_sd3_ip_adapter

    root = Path(root)
    paths: dict[str, Path] = {}
    pipes = {}
    for family, name, build in (
        ("sd15", TINY_SD15_NAME, build_tiny_sd15),
        ("sdxl", TINY_SDXL_NAME, build_tiny_sdxl),
    ):
        pipe = build()
        folder = root / name
        _save_folder(pipe, folder)
        single = root / f"{name}.safetensors"
        save_file(pipeline_to_ldm(pipe), str(single))
        paths[family] = folder
        paths[f"{family}_single"] = single
        paths[f"{family}_config"] = write_config_dir(folder, root / f"{name}{CONFIG_DIR_SUFFIX}")
        pipes[family] = pipe
    paths["sd3"], pipes["sd3"] = write_tiny_sd3(root, TINY_SEED)
    for variant in ("schnell", "dev", "kontext"):
        paths[f"flux_{variant}"], pipes[f"flux_{variant}"] = write_tiny_flux(root, variant, TINY_SEED)
    paths.update(write_tiny_adapters(root, {k: pipes[k] for k in ("sd15", "sdxl", "sd3")}))
    paths.update(write_tiny_flux_adapters(root, pipes["flux_dev"]))  # beside the others: IP-Adapter/flux/, ...
    paths["ip_adapter_sd3"] = write_tiny_sd3_ip_adapter(root / "IP-Adapter", pipes["sd3"]) / "sd3"
    paths["clip"] = write_tiny_clip(root / "tiny-clip")  # the book-page scorer
    return paths


def ensure_tiny_model(demo_dir: Path) -> Path:
    """The offline demo model `demo_dir/tiny-sd15`, and its adapters beside it, written on first use.

    `demo_dir` is `DATA_DIR/demo/`, apart from the user's model folders (see `engine.demo.layout`): the demo's
    IP-Adapter/, ControlNet/, Lora/ and embeddings/ are used only while the demo model is loaded.
    """
    demo_dir = Path(demo_dir)
    folder = demo_dir / DEMO_FOLDER
    have_model = (folder / "model_index.json").is_file() and any((folder / "unet").glob("*.safetensors"))
    have_adapters = (demo_dir / "embeddings" / "tiny_ti.safetensors").is_file()  # written last
    if have_model and have_adapters:
        return folder
    pipe = build_tiny_sd15()
    if not have_model:
        _save_folder(pipe, folder)
    write_tiny_adapters(demo_dir, {"sd15": pipe})
    return folder
