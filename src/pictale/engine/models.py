"""Model discovery and loading: A1111-style checkpoint dirs, diffusers folders, single files and hub ids.

The same code loads the tiny test models and real checkpoints. Nothing here ever unpickles: pickle checkpoints
are refused by name, and every load passes `use_safetensors=True` or reads a `.safetensors` file.

Single files are loaded with `from_single_file(config=<local dir>)` so no hub access is needed. The config dir
is `<stem>.config/` beside the file when present (the tiny models write one; users can add one for any
checkpoint), else the packaged `engine/configs/{sd15,sdxl}`.

FLUX.1 transformer files (safetensors, fp8, GGUF) are listed from `Stable-diffusion/` and ComfyUI's `unet/`
and assembled with their T5, CLIP-L and VAE files by `families.flux.loading` (see `families/flux/files.py`).

Stable Diffusion 3 ("sd3") loads from diffusers folders and hub ids only: its single files bundle three text
encoders in layouts that need hub configs, so they are refused with a message saying to use a folder.

torch and diffusers are imported only inside `load_pipeline`, so listing and resolving models stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from pictale.core.errors import ModelLoadError, ModelNotFound, PictaleError, UnsafeModelFile
from pictale.core.types import ModelEntry
from pictale.engine.checks.headers import check_complete, family_from_keys, read_safetensors_header
from pictale.engine.demo.layout import DEMO_NAME
from pictale.engine.families.flux.files import UNET_SUBDIR, FluxOptions, gguf_family, looks_flux
from pictale.engine.hashes import HashCache

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "Stable-diffusion"
GGUF_SUFFIX = ".gguf"
CONFIG_DIR_SUFFIX = ".config"
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl"})
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_SAFE_ONLY = "pictale loads only .safetensors files and diffusers folders"


# ---------------------------------------------------------------------------------------------- families


FLUX_CLASSES = ("FluxPipeline", "FluxKontextPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline")
"""FLUX.1 base pipelines (schnell, dev, Kontext); Fill and Control models have other transformers."""


def _family_from_class(class_name: str, folder: Path | None, name: str) -> str:
    if class_name in FLUX_CLASSES:
        return "flux"
    if class_name.startswith("Flux"):
        raise ModelLoadError(
            f"{name}: {class_name} (FLUX.1 Fill, Canny or Depth) is not supported; pictale serves FLUX.1 "
            "schnell, dev and Kontext"
        )
    if class_name.startswith("StableDiffusion3"):
        return "sd3"
    if class_name.startswith("StableDiffusionXL"):
        return "sdxl"
    if class_name.startswith("StableDiffusion"):
        unet_config = folder / "unet" / "config.json" if folder else None
        if unet_config and unet_config.is_file():
            width = json.loads(unet_config.read_text(encoding="utf-8")).get("cross_attention_dim")
            return "sd2" if width == 1024 else "sd15"
        return "sd15"
    raise ModelLoadError(
        f"{name}: unsupported pipeline class {class_name!r} (expected SD 1.5 / SD 2 / SDXL / SD3 / FLUX.1)"
    )


def detect_family(path: Path) -> str:
    """ "sd15", "sdxl", "sd2", "sd3" or "flux": from model_index.json for folders, from the header for files."""
    path = Path(path)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{path.name}: not a diffusers folder (no model_index.json)")
        try:
            class_name = json.loads(index.read_text(encoding="utf-8"))["_class_name"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{path.name}: unreadable model_index.json ({exc})") from exc
        return _family_from_class(str(class_name), path, path.name)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeModelFile(f"{path.name}: pickle checkpoint refused; {_SAFE_ONLY}")
    if path.suffix.lower() == GGUF_SUFFIX:
        return gguf_family(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{path.name}: not a .safetensors or .gguf file or a diffusers folder")
    return family_from_keys(read_safetensors_header(path), path.name)


# ---------------------------------------------------------------------------------------------- scanning


def _denoiser_dir(folder: Path) -> Path:
    """The UNet folder, or the transformer folder of transformer models (SD3)."""
    return (
        folder / "transformer"
        if (folder / "transformer").is_dir() and not (folder / "unet").is_dir()
        else folder / "unet"
    )


def unet_weights(folder: Path) -> Path | None:
    denoiser = _denoiser_dir(folder)
    main = denoiser / "diffusion_pytorch_model.safetensors"
    if main.is_file():
        return main
    found = sorted(denoiser.glob("*.safetensors"))
    return found[0] if found else None


def _is_config_dir(folder: Path) -> bool:
    return folder.name.endswith(CONFIG_DIR_SUFFIX) and any(
        folder.with_suffix(s).is_file() for s in (".safetensors", GGUF_SUFFIX)
    )


def _entry(path: Path, rel: str, cache: HashCache, *, complete: bool = False) -> ModelEntry:
    """A ModelEntry for a folder or single file; `rel` is its name relative to the scanned directory.

    `complete`: a single file shorter than its header says is refused here (the scan lists it as skipped)."""
    family = detect_family(path)
    if complete and path.is_file() and path.suffix.lower() != GGUF_SUFFIX:  # GGUF: its reader checks the size
        check_complete(path, read_safetensors_header(path))
    if path.is_dir():
        weights = unet_weights(path)
        if weights is None:
            denoiser = _denoiser_dir(path)
            pickles = sorted(p.name for p in denoiser.glob("*") if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise UnsafeModelFile(
                    f"{rel}: {denoiser.name} weights only as pickle ({', '.join(pickles)}); {_SAFE_ONLY}"
                )
            raise ModelLoadError(f"{rel}: diffusers folder without {denoiser.name} .safetensors weights")
        sha, source, model_name = cache.sha256(weights), "folder", rel.replace("/", "_")
    else:
        sha, source = cache.sha256(path), "single_file"
        model_name = os.path.splitext(rel.replace("/", "_"))[0]
    return ModelEntry(
        title=f"{rel} [{sha[:10]}]",
        model_name=model_name,
        filename=str(path.absolute()),
        source=source,
        family=family,
        sha256=sha,
    )


def scan_checkpoints(directory: Path, skipped: dict[str, str] | None = None) -> list[ModelEntry]:
    """Every loadable model under `directory` (recursively), sorted by title, like A1111's checkpoint list, then
    the FLUX.1 transformers of ComfyUI's `unet/` beside it (other files there are no checkpoints: not listed).

    `skipped` gets {relative name: why} for each file or folder that looks like a checkpoint but cannot load.
    """
    directory = Path(directory)
    entries = _scan(directory, skipped) if directory.is_dir() else []
    unet_dir = directory.parent / UNET_SUBDIR
    if directory.name == CHECKPOINT_SUBDIR and unet_dir.is_dir():
        titles = {e.title for e in entries}
        entries += [e for e in _scan(unet_dir, skipped, flux_only=True) if e.title not in titles]
    return entries


def _scan(directory: Path, skipped: dict[str, str] | None, *, flux_only: bool = False) -> list[ModelEntry]:
    cache = HashCache(directory)
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    # Symlinked model dirs are common (shared with other UIs); `seen` stops symlink cycles.
    for root, dirs, files in os.walk(directory, followlinks=True):
        here = Path(root)
        if os.path.realpath(here) in seen:
            dirs[:] = []
            continue
        seen.add(os.path.realpath(here))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if here != directory and "model_index.json" in files:
            dirs[:] = []  # a diffusers folder is one model, never a tree to search
            if not _is_config_dir(here):
                _add(entries, here, here.relative_to(directory).as_posix(), cache, skipped)
            continue
        for name in sorted(files):
            path = here / name
            suffix = path.suffix.lower()
            if suffix in (".safetensors", GGUF_SUFFIX):
                _add(entries, path, path.relative_to(directory).as_posix(), cache, skipped, flux_only)
            elif suffix in PICKLE_SUFFIXES:
                logger.warning("not listing pickle checkpoint %s: %s", path, _SAFE_ONLY)
    cache.save()
    return sorted(entries, key=lambda e: e.title.lower())


def _add(entries: list, path: Path, rel: str, cache: HashCache, skipped: dict | None, flux_only: bool = False) -> None:
    try:
        if flux_only and not looks_flux(path):
            return  # ComfyUI's unet/ also holds SD UNets and other models: none is a checkpoint
        entries.append(_entry(path, rel, cache, complete=True))
    except PictaleError as exc:
        logger.warning("skipping %s: %s", path, exc.message)
        if skipped is not None:
            skipped[rel] = exc.message


# ---------------------------------------------------------------------------------------------- resolving


def _pickle_guard(spec: str) -> None:
    if Path(spec).suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeModelFile(
            f"{Path(spec).name}: pickle checkpoints (.ckpt/.pt/.pth/.bin) are never loaded; {_SAFE_ONLY}"
        )


def _entry_for_path(path: Path) -> ModelEntry:
    path = path.absolute()
    if path.is_dir() and not (path / "model_index.json").is_file():
        raise ModelLoadError(f"{path.name}: not a diffusers folder (no model_index.json)")
    cache = HashCache(path.parent)
    entry = _entry(path, path.name, cache)
    cache.save()
    return entry


def _match(spec: str, entries: list[ModelEntry]) -> ModelEntry | None:
    """A1111's lookup order: title, model name, file name, hash, then the shortest title containing spec."""
    tests = (
        lambda e: e.title == spec,
        lambda e: e.model_name == spec,
        lambda e: e.title.rsplit(" [", 1)[0] in (spec, spec + ".safetensors"),
        lambda e: e.sha256 is not None and len(spec) >= 8 and e.sha256.startswith(spec.lower()),
    )
    for test in tests:
        if found := [e for e in entries if test(e)]:
            return found[0]
    found = sorted((e for e in entries if spec in e.title), key=lambda e: len(e.title))
    return found[0] if found else None


def resolve_model(spec: str, models_dir: Path, demo_dir: Path | None = None) -> ModelEntry:
    """Turn "tiny", a path, a title/name in `models_dir/Stable-diffusion` or a hub id into a ModelEntry.

    "tiny" is the demo model, written on first use in `demo_dir` (default: `demo/` beside `models_dir`).
    """
    spec = spec.strip()
    if not spec:
        raise ModelNotFound("no model named: empty model name")
    checkpoint_dir = Path(models_dir) / CHECKPOINT_SUBDIR
    from pictale.engine.demo.entries import TINY_FLUX, demo_entry, tiny_flux_entry

    if spec.lower() == "tiny" or spec == DEMO_NAME or spec.startswith(DEMO_NAME + " ["):
        return demo_entry(Path(demo_dir) if demo_dir is not None else Path(models_dir).parent / "demo", models_dir)
    _pickle_guard(spec)
    path = Path(spec).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise ModelNotFound(f"model file or folder {spec!r} does not exist")
        return _entry_for_path(path)
    if found := _match(spec, scan_checkpoints(checkpoint_dir)):  # with the Flux files of models/unet
        return found
    if spec.split(" (")[0] in TINY_FLUX:
        return tiny_flux_entry(
            Path(demo_dir) if demo_dir is not None else Path(models_dir).parent / "demo", spec.split(" (")[0]
        )
    if path.exists():
        return _entry_for_path(path)
    if _HUB_ID.fullmatch(spec):
        return ModelEntry(title=spec, model_name=spec, filename=spec, source="hub")
    raise ModelNotFound(
        f"model {spec!r} not found: not an existing path, not a checkpoint in {checkpoint_dir}, not a hub id"
    )


# ---------------------------------------------------------------------------------------------- loading


def single_file_config_dir(path: Path, family: str) -> Path:
    """The local diffusers config dir for a single file: `<stem>.config/` beside it, else the packaged one."""
    sibling = Path(path).with_suffix(CONFIG_DIR_SUFFIX)
    if (sibling / "model_index.json").is_file():
        return sibling
    from pictale.engine.configs import FAMILIES, packaged_config_dir

    if family not in FAMILIES:
        raise ModelLoadError(
            f"{Path(path).name}: no packaged config for {family} single files; "
            f"put a diffusers config dir (model_index.json, */config.json, tokenizer) at {sibling.name}/"
        )
    return packaged_config_dir(family)


def _pipeline_class(family: str, class_name: str = "") -> Any:
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "flux":
        from diffusers import FluxKontextPipeline, FluxPipeline

        return FluxKontextPipeline if class_name == "FluxKontextPipeline" else FluxPipeline
    if family == "sd3":
        return StableDiffusion3Pipeline
    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _read_index(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _no_safety_checker(family: str) -> dict[str, Any]:
    if family in ("sdxl", "sd3", "flux"):
        return {}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _load_hub(hub_id: str, dtype: Any, device: str) -> Any:
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(hub_id)
    except Exception as exc:
        offline = (
            " (HF_HUB_OFFLINE is set and it is not in the local cache)" if os.environ.get("HF_HUB_OFFLINE") else ""
        )
        raise ModelNotFound(f"hub model {hub_id!r} is not available{offline}: {type(exc).__name__}: {exc}") from exc
    family = _family_from_class(str(index.get("_class_name", "")), None, hub_id)
    if family == "flux":
        from pictale.engine.families.flux.loading import flux_dtype

        dtype = flux_dtype(dtype, device)
    return _pipeline_class(family, str(index.get("_class_name", ""))).from_pretrained(
        hub_id, use_safetensors=True, dtype=dtype, **_no_safety_checker(family)
    )


def load_pipeline(entry: ModelEntry, *, device: str = "cpu", dtype: Any = None, flux: FluxOptions | None = None) -> Any:
    """The txt2img pipeline for entry (StableDiffusion[XL|3]Pipeline, Flux[Kontext]Pipeline), no safety checker.

    `flux`: where a Flux transformer file's companions are and its memory mode (default: found from the file's
    place, "auto"); a Flux single file is placed on `device` by `families.flux.memory.apply_memory_mode`."""
    import torch

    if dtype is None:
        dtype = torch.float32 if str(device).startswith("cpu") else torch.float16
    placed = False
    name = Path(entry.filename).name if entry.source != "hub" else entry.filename
    try:
        if entry.source == "hub":
            pipe = _load_hub(entry.filename, dtype, device)
        else:
            path = Path(entry.filename)
            _pickle_guard(str(path))
            if not path.exists():
                raise ModelNotFound(f"model file or folder {entry.filename!r} does not exist")
            family = entry.family or detect_family(path)
            class_name = str(_read_index(path).get("_class_name", "")) if path.is_dir() else ""
            cls, extra = _pipeline_class(family, class_name), _no_safety_checker(family)
            if path.is_dir():
                if family == "flux":
                    from pictale.engine.families.flux.loading import flux_dtype

                    dtype = flux_dtype(dtype, device)  # bfloat16 on CUDA: FLUX.1 and T5 overflow in float16
                pipe = cls.from_pretrained(path, use_safetensors=True, local_files_only=True, dtype=dtype, **extra)
            elif family == "flux":
                from pictale.engine.families.flux.loading import load_flux_file

                pipe, placed = load_flux_file(path, device, dtype, flux or FluxOptions()), True
            else:
                check_complete(path, read_safetensors_header(path))
                config = single_file_config_dir(path, family)
                pipe = cls.from_single_file(str(path), config=str(config), local_files_only=True, dtype=dtype, **extra)
        for attr in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            tokenizer = getattr(pipe, attr, None)
            if tokenizer is not None and len(tokenizer) <= 2:
                raise ModelLoadError(f"{name}: {attr} loaded empty (missing vocab files?)")
        if not placed and pipeline_family(pipe) == "flux":  # folders and hub models: the same memory modes
            from pictale.engine.families.flux.memory import apply_memory_mode

            pipe.pictale_memory_mode = apply_memory_mode(pipe, (flux or FluxOptions()).memory, device)
        elif not placed:
            pipe.to(device)
    except PictaleError:
        raise
    except Exception as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ModelLoadError(f"cannot load {name}: {type(exc).__name__}: {reason}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_family(pipe: Any) -> str:
    """ "flux", "sd3", "sdxl" or "sd15"/"sd2" for a loaded pipeline (hub entries learn their family only when
    loaded)."""
    if type(pipe).__name__.startswith("Flux"):
        return "flux"
    if getattr(pipe, "transformer", None) is not None and hasattr(pipe, "text_encoder_3"):
        return "sd3"
    if hasattr(pipe, "text_encoder_2"):
        return "sdxl"
    return "sd2" if getattr(pipe.unet.config, "cross_attention_dim", None) == 1024 else "sd15"
