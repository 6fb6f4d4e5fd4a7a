"""FLUX.1 single files into a pipeline: a transformer file (safetensors, fp8 or GGUF) plus T5-XXL, CLIP-L and VAE.

The recipe of `shared/reference/flux.md` section 3, all offline:

- transformer: `FluxTransformer2DModel.from_single_file(file, config=<dir>, subfolder="transformer")`, with a
  `GGUFQuantizationConfig` for `.gguf` files (GGUFParameter weights, dequantised per layer: runs on the CPU);
- VAE: `AutoencoderKL.from_single_file(ae, config=<dir>, subfolder="vae")`;
- CLIP-L and T5: `from_pretrained` of a temporary folder holding the config and the file linked as
  `model.safetensors` (transformers 5 renames the keys there; a bare `load_state_dict` misses them all);
- then `FluxPipeline.from_pretrained(<dir>, transformer=..., vae=..., text_encoder=..., text_encoder_2=...)`
  (`FluxKontextPipeline` for Kontext).

ComfyUI all-in-one files are split by prefix into the same parts. The config dir is `<stem>.config/` beside
the file, else the packaged `engine/configs/flux-{schnell,dev}/`; tokenizers missing from it come from the
packaged CLIP and T5 tokenizers. The pipeline comes back on the CPU: `memory.apply_memory_mode` places it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pictale.core.errors import ModelLoadError
from pictale.engine.families.flux import files
from pictale.engine.families.flux.variant import flux_variant

log = logging.getLogger(__name__)

CONFIG_DIR_SUFFIX = ".config"


def flux_config_dir(path: Path, variant: str) -> Path:
    """`<stem>.config/` beside the file when it holds a model_index.json, else the packaged schnell/dev configs."""
    sibling = Path(path).with_suffix(CONFIG_DIR_SUFFIX)
    if (sibling / "model_index.json").is_file():
        return sibling
    from pictale.engine.configs import flux_config

    return flux_config(variant)


def _tokenizer_dir(config_dir: Path, sub: str) -> Path:
    """The config dir's own tokenizer folder when it has files, else the packaged one (CLIP-L BPE / T5 v1.1)."""
    from pictale.engine.configs import CLIP_TOKENIZER, T5_TOKENIZER

    own = Path(config_dir) / sub
    if own.is_dir() and (any(own.glob("tokenizer*.json")) or any(own.glob("*.model"))):
        return own
    packaged = CLIP_TOKENIZER if sub == "tokenizer" else T5_TOKENIZER
    if not (packaged / "tokenizer_config.json").is_file():
        raise ModelLoadError(
            f"no {sub} for the Flux config dir {config_dir}: put the model's tokenizer files in {own}/ "
            "(`pictale models pull --configs-only black-forest-labs/FLUX.1-schnell` fetches them)"
        )
    return packaged


def _subset(path: Path, prefix: str) -> dict[str, Any]:
    """The tensors under `prefix` of a safetensors file, prefix removed (read one by one, memory-mapped)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118


def _check_loaded(model: Any, info: dict[str, Any], what: str, source: str) -> Any:
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ModelLoadError(
            f"{source}: not a {what} file for this config ({len(missing)} weights missing, e.g. {missing[0]})"
        )
    return model


def _text_encoder(cls: Any, weights: Path | dict, config_dir: Path, sub: str, dtype: Any, what: str) -> Any:
    """CLIP-L or T5 from a file (linked as model.safetensors beside its config) or from a state dict."""
    config = Path(config_dir) / sub / "config.json"
    if isinstance(weights, dict):
        source = f"{what} in the all-in-one file"
        model, info = cls.from_pretrained(
            None, config=cls.config_class.from_json_file(str(config)), state_dict=weights, dtype=dtype,
            output_loading_info=True,
        )  # fmt: skip
        return _check_loaded(model, info, what, source)
    with tempfile.TemporaryDirectory(prefix="pictale-flux-") as tmp:
        shutil.copy(config, Path(tmp) / "config.json")
        os.symlink(Path(weights).absolute(), Path(tmp) / "model.safetensors")
        model, info = cls.from_pretrained(tmp, local_files_only=True, dtype=dtype, output_loading_info=True)
    return _check_loaded(model, info, what, Path(weights).name)


def _transformer(path: Path, layout: str, config_dir: Path, dtype: Any) -> Any:
    from diffusers import FluxTransformer2DModel

    kwargs: dict[str, Any] = {"config": str(config_dir), "subfolder": "transformer", "local_files_only": True}
    if path.suffix.lower() == ".gguf":
        from diffusers import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    source: Any = str(path)
    if layout in ("all-in-one", "bfl-prefixed"):
        source = _subset(path, files.AIO_PREFIX)
    return FluxTransformer2DModel.from_single_file(source, dtype=dtype, **kwargs)


def _vae(weights: Path | dict, config_dir: Path, dtype: Any) -> Any:
    from diffusers import AutoencoderKL

    source = weights if isinstance(weights, dict) else str(weights)
    return AutoencoderKL.from_single_file(
        source, config=str(config_dir), subfolder="vae", local_files_only=True, dtype=dtype
    )


def flux_dtype(dtype: Any, device: Any) -> Any:
    """float16 becomes bfloat16 on CUDA: FLUX.1 and T5 are trained in bf16 and overflow in fp16 (black images)."""
    import torch

    if dtype == torch.float16 and str(device).startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return dtype


def load_flux_single_file(path: Path, shapes: dict[str, Any], options: files.FluxOptions, *, dtype: Any) -> Any:
    """Assemble the Flux pipeline for the transformer file `path` (`shapes`: its tensor names and shapes), on the CPU.

    ModelLoadError names each missing companion file; `memory.apply_memory_mode` then places the pipeline."""
    from diffusers import FluxKontextPipeline, FluxPipeline
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    path = Path(path)
    layout = files.flux_layout(shapes)
    if layout is None:
        raise ModelLoadError(f"{path.name}: no FLUX.1 transformer weights in this file")
    files.check_flux_input(shapes, path.name)
    companions = files.find_companions(path, shapes, options)
    variant = flux_variant(path, shapes)
    config_dir = flux_config_dir(path, variant)
    log.info("loading FLUX.1 %s from %s (%s layout, config %s)", variant, path.name, layout, config_dir)
    try:
        transformer = _transformer(path, layout, config_dir, dtype)
    except (ValueError, RuntimeError, IndexError, KeyError, OSError) as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelLoadError(
            f"{path.name}: its transformer weights do not fit the FLUX.1 {variant} config {config_dir} ({reason}); "
            f"a model of other shapes needs its own config dir at {path.with_suffix(CONFIG_DIR_SUFFIX)}/"
        ) from exc
    vae = _vae(companions.vae or _subset(path, files.VAE_PREFIX), config_dir, dtype)
    clip = companions.clip or _subset(path, files.CLIP_PREFIX)
    t5 = companions.t5 or _subset(path, files.T5_PREFIX)
    text_encoder = _text_encoder(CLIPTextModel, clip, config_dir, "text_encoder", dtype, "CLIP-L text encoder")
    text_encoder_2 = _text_encoder(T5EncoderModel, t5, config_dir, "text_encoder_2", dtype, "T5-XXL text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_dir(config_dir, "tokenizer"))
    tokenizer_2 = T5TokenizerFast.from_pretrained(_tokenizer_dir(config_dir, "tokenizer_2"))
    kontext = variant == "kontext" or _index_class(config_dir) == "FluxKontextPipeline"
    cls = FluxKontextPipeline if kontext else FluxPipeline
    return cls.from_pretrained(
        str(config_dir),
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        local_files_only=True,  # every component is given and in `dtype` already: no dtype here (it warns)
    )


def _index_class(config_dir: Path) -> str:
    try:
        return str(json.loads((Path(config_dir) / "model_index.json").read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def load_flux_file(path: Path, device: Any, dtype: Any, options: files.FluxOptions) -> Any:
    """Load a Flux transformer file with its companions and place it with `options.memory`; what was applied is
    kept as `pipe.pictale_memory_mode` (for the log and /sdapi/v1/options)."""
    from pictale.engine.families.flux.memory import apply_memory_mode
    from pictale.engine.models import check_complete, read_safetensors_header

    path = Path(path)
    shapes = files.tensor_shapes(path)
    if path.suffix.lower() != ".gguf":
        check_complete(path, read_safetensors_header(path))
    pipe = load_flux_single_file(path, shapes, options, dtype=flux_dtype(dtype, device))
    pipe.pictale_memory_mode = apply_memory_mode(pipe, options.memory, device)
    return pipe
