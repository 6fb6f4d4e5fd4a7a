"""FLUX.1 single files and their companions, told apart by their tensor names alone (no torch).

A Flux transformer file (`flux1-dev.safetensors`, Kijai/Comfy fp8, city96 GGUF, fine-tunes) sits in
`models/Stable-diffusion/` or ComfyUI's `models/unet/` (also `diffusion_models/`). It holds only the
transformer, or, in ComfyUI's all-in-one checkpoints, the transformer behind `model.diffusion_model.` plus
`text_encoders.clip_l.*`, `text_encoders.t5xxl.*` and `vae.*`. A transformer-only file needs three companions:
T5-XXL and CLIP-L (`models/text_encoder/`, ComfyUI's `text_encoders/` and `clip/`) and the VAE `ae.safetensors`
(`models/VAE/` or `vae/`), found by the names of `Settings.flux_t5_file`, `flux_clip_file`, `flux_vae_file`.

Key names (`shared/reference/flux.md` section 3): BFL `double_blocks.0.img_attn.norm.key_norm.scale`
(optionally behind `model.diffusion_model.`), diffusers `single_transformer_blocks.0.` with `x_embedder.`;
the image input width (64 base, 128 Canny/Depth, 384 Fill) tells the base model from the ones we refuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pictale.core.errors import ModelLoadError

AIO_PREFIX = "model.diffusion_model."
BFL_MARKER = "double_blocks.0.img_attn.norm.key_norm.scale"
DIFFUSERS_MARKERS = ("single_transformer_blocks.0.", "x_embedder.")
CLIP_PREFIX = "text_encoders.clip_l.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."
VAE_PREFIX = "vae."
_INPUT_WEIGHTS = ("img_in.weight", "x_embedder.weight")
_BASE_INPUT = 64
_REFUSED_INPUT = {128: "FLUX.1 Canny/Depth (control)", 384: "FLUX.1 Fill"}

TEXT_ENCODER_DIRS = ("text_encoder", "text_encoders", "clip")
VAE_DIRS = ("VAE", "vae")
TRANSFORMER_DIRS = ("Stable-diffusion", "unet", "diffusion_models", "checkpoints")
"""Where Flux transformers live in the A1111/Forge and ComfyUI layouts (the first two are scanned)."""
UNET_SUBDIR = "unet"

DEFAULT_T5_FILES = ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn.safetensors")
DEFAULT_CLIP_FILES = ("clip_l.safetensors",)
DEFAULT_VAE_FILES = ("ae.safetensors",)


# ---------------------------------------------------------------------------------------------- keys


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape (torch order) from a .safetensors header or a GGUF file's tensor table."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        return gguf_tensor_shapes(path)
    from pictale.engine.models import read_safetensors_header

    return {k: list(v.get("shape", [])) for k, v in read_safetensors_header(path).items() if isinstance(v, dict)}


def gguf_tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape of a GGUF file, read with the `gguf` package (the data is memory-mapped, not read)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # a dependency; a broken install should still say what is missing
        raise ModelLoadError(f"{Path(path).name}: reading GGUF needs the `gguf` package (pip install gguf)") from exc
    try:
        reader = GGUFReader(str(path))
        # GGUF stores ggml's dimension order (innermost first): reversed, it is torch's.
        return {t.name: [int(d) for d in reversed(list(t.shape))] for t in reader.tensors}
    except Exception as exc:  # the reader raises ValueError, struct errors or numpy errors on broken files
        raise ModelLoadError(f"{Path(path).name}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def _diffusers_names(keys: set[str], prefix: str = "") -> bool:
    single = prefix + DIFFUSERS_MARKERS[0]
    return prefix + "x_embedder.weight" in keys and any(k.startswith(single) for k in keys)  # not LoRA keys


def flux_layout(keys: Iterable[str]) -> str | None:
    """ "bfl", "diffusers", "bfl-prefixed" (behind `model.diffusion_model.`) or "all-in-one" (with text encoders)
    for a Flux transformer file's tensor names; None when they are no Flux transformer (LoRAs included)."""
    keys = set(keys)
    if AIO_PREFIX + BFL_MARKER in keys or _diffusers_names(keys, AIO_PREFIX):
        return "all-in-one" if any(k.startswith((CLIP_PREFIX, T5_PREFIX)) for k in keys) else "bfl-prefixed"
    if BFL_MARKER in keys:
        return "bfl"
    return "diffusers" if _diffusers_names(keys) else None


def check_flux_input(shapes: dict[str, Any], name: str) -> None:
    """ModelLoadError for Fill and Canny/Depth transformers (other input widths): pictale serves the base models."""
    for key, shape in shapes.items():
        if key.removeprefix(AIO_PREFIX) in _INPUT_WEIGHTS:
            if isinstance(shape, dict):
                shape = shape.get("shape", [])
            width = int(shape[-1]) if shape else _BASE_INPUT
            if width != _BASE_INPUT:
                kind = _REFUSED_INPUT.get(width, f"a Flux transformer with {width} input channels")
                raise ModelLoadError(f"{name}: {kind} is not supported; pictale serves FLUX.1 schnell, dev and Kontext")


def is_flux_file(shapes: Any, name: str) -> bool:
    """True for a FLUX.1 base transformer's tensor names (`shapes`: a header or name -> shape dict, or names);
    ModelLoadError for Fill and Canny/Depth files."""
    if flux_layout(shapes) is None:
        return False
    check_flux_input(shapes if isinstance(shapes, dict) else {}, name)
    return True


def gguf_family(path: Path) -> str:
    """ "flux" for a GGUF FLUX.1 transformer; ModelLoadError for any other GGUF file."""
    if not is_flux_file(gguf_tensor_shapes(path), Path(path).name):
        raise ModelLoadError(f"{Path(path).name}: a GGUF file without FLUX.1 transformer weights")
    return "flux"


def looks_flux(path: Path) -> bool:
    """True when the file holds Flux transformer weights (even ones pictale refuses); False when unreadable."""
    try:
        return flux_layout(tensor_shapes(path)) is not None
    except ModelLoadError:
        return False


# ---------------------------------------------------------------------------------------------- companions


@dataclass(frozen=True)
class FluxOptions:
    """Where a Flux transformer's companions are and how to hold the model in memory (from Settings)."""

    models_dir: Path | None = None
    """None: the models dir above the file (the parent of its `unet/` or `Stable-diffusion/` folder)."""
    t5_files: tuple[str, ...] = DEFAULT_T5_FILES
    clip_files: tuple[str, ...] = DEFAULT_CLIP_FILES
    vae_files: tuple[str, ...] = DEFAULT_VAE_FILES
    memory: str = "auto"


def flux_options(settings: Any) -> FluxOptions:
    """FluxOptions from a `core.config.Settings`."""
    return FluxOptions(
        models_dir=settings.models_path,
        t5_files=tuple(settings.flux_t5_file),
        clip_files=tuple(settings.flux_clip_file),
        vae_files=tuple(settings.flux_vae_file),
        memory=settings.flux_memory,
    )


@dataclass(frozen=True)
class Companions:
    """The files a Flux transformer file is assembled with; None where the file itself holds that part."""

    t5: Path | None = None
    clip: Path | None = None
    vae: Path | None = None
    looked_in: dict[str, list[Path]] = field(default_factory=dict)


def models_dir_of(path: Path) -> Path:
    """The models dir that holds `path`: the parent of its nearest `unet/`, `Stable-diffusion/`... folder."""
    path = Path(path).absolute()
    for parent in path.parents:
        if parent.name in TRANSFORMER_DIRS:
            return parent.parent
    return path.parent


def _search_dirs(path: Path, models_dir: Path | None, subdirs: tuple[str, ...]) -> list[Path]:
    roots = [models_dir] if models_dir is not None else []
    inferred = models_dir_of(path)
    if inferred not in roots:
        roots.append(inferred)
    dirs = [root / sub for root in roots for sub in subdirs]
    return [*dirs, Path(path).absolute().parent]  # beside the transformer file as well


def _find(names: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for name in names:
        if Path(name).is_absolute():
            if Path(name).is_file():
                return Path(name)
            continue
        for folder in dirs:
            if (folder / name).is_file():
                return folder / name
    return None


def find_companions(path: Path, keys: Iterable[str], options: FluxOptions) -> Companions:
    """The T5, CLIP-L and VAE files `path` needs (none for an all-in-one file).

    ModelLoadError naming each missing file, the setting that names it and the folders where it was looked for."""
    keys = set(keys)
    has = {
        "t5": any(k.startswith(T5_PREFIX) for k in keys),
        "clip": any(k.startswith(CLIP_PREFIX) for k in keys),
        "vae": any(k.startswith(VAE_PREFIX) for k in keys),
    }
    wanted = {
        "t5": ("T5-XXL text encoder", options.t5_files, TEXT_ENCODER_DIRS, "flux_t5_file"),
        "clip": ("CLIP-L text encoder", options.clip_files, TEXT_ENCODER_DIRS, "flux_clip_file"),
        "vae": ("Flux VAE", options.vae_files, VAE_DIRS, "flux_vae_file"),
    }
    found: dict[str, Path | None] = {}
    looked_in: dict[str, list[Path]] = {}
    missing: list[str] = []
    for part, (label, names, subdirs, setting) in wanted.items():
        if has[part]:
            found[part] = None
            continue
        dirs = _search_dirs(path, options.models_dir, subdirs)
        looked_in[part] = dirs
        found[part] = _find(tuple(names), dirs)
        if found[part] is None:
            where = options.models_dir or models_dir_of(path)
            missing.append(
                f"the {label} ({' or '.join(names)}): put it in {where / subdirs[0]}/ "
                f"(or name another file with PICTALE_{setting.upper()})"
            )
    if missing:
        raise ModelLoadError(
            f"{Path(path).name} is a FLUX.1 transformer without its companion files; missing: " + "; ".join(missing)
        )
    return Companions(t5=found["t5"], clip=found["clip"], vae=found["vae"], looked_in=looked_in)
