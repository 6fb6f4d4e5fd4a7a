"""Does an adapter file fit the loaded model? Read from safetensors headers and config.json files, no torch.

IP-Adapter files are made for one UNet: one `ip_adapter.{k}.to_k_ip/to_v_ip` pair per cross-attention layer,
each `[width of that layer, cross-attention width]`, and an image projection into the cross-attention width
fed by one image encoder. An OpenPose ControlNet copies its UNet's blocks. A file made for another model
(the tiny demo adapters beside a real SD 1.5 model, an SDXL adapter in an SD 1.5 folder) would fail deep in
diffusers with a shape error; here it is an UnsupportedFeature (422) naming the file and the model, raised
before the job is queued (`service.families`) and again before the engine loads anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pictale.core.errors import PictaleError, UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef
from pictale.engine.families.support import (
    FLUX_CONTROLNET,
    FLUX_IP_ENCODER,
    FLUX_IP_WEIGHTS,
    IP_KINDS,
    T5_FAMILIES,
    applied,
    family_label,
)
from pictale.engine.models import read_safetensors_header

TINY_WIDTH = 64
"""Cross-attention widths up to this are pictale's tiny test/demo models."""
REAL_WIDTH = 768
"""Real models start here (SD 1.5: 768, SD 2: 1024, SDXL: 2048)."""


@dataclass(frozen=True)
class IPFiles:
    """The adapter weights and image encoder one slot uses."""

    weights: Path
    encoder: Path


@dataclass(frozen=True)
class ModelDims:
    """The loaded UNet's shapes that adapters must match."""

    name: str
    family: str
    cross_attention_dim: int
    ip_hidden: tuple[int, ...]
    """Width of each cross-attention layer, in `unet.attn_processors` order (diffusers' IP-Adapter order)."""
    block_out_channels: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.name!r} ({family_label(self.family)}, cross-attention width {self.cross_attention_dim})"


def cross_attention_hidden_sizes(unet: Any) -> list[int]:
    """Hidden size of each cross-attention processor, in `unet.attn_processors` order (diffusers' rule)."""
    channels = list(unet.config.block_out_channels)
    sizes = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            sizes.append(channels[-1])
        elif name.startswith("up_blocks"):
            sizes.append(list(reversed(channels))[int(name[len("up_blocks.")])])
        else:
            sizes.append(channels[int(name[len("down_blocks.")])])
    return sizes


def unet_dims(unet: Any, name: str, family: str) -> ModelDims:
    config = unet.config
    cross = config.cross_attention_dim
    return ModelDims(
        name=name,
        family=family,
        cross_attention_dim=int(cross if isinstance(cross, int) else cross[0]),
        ip_hidden=tuple(cross_attention_hidden_sizes(unet)),
        block_out_channels=tuple(config.block_out_channels),
    )


def ip_files(root: Path | None, family: str, kind: AvatarKind, name: str) -> IPFiles:
    """Which files a face/style avatar needs for `family`; UnsupportedFeature naming the path when absent."""
    what = f"{kind.value} avatar {name!r}"
    if root is None:
        raise UnsupportedFeature(f"{what} needs IP-Adapter weights, but no IP-Adapter directory is configured")
    root = Path(root)
    if family == "sd15":
        weight = "ip-adapter-full-face_sd15.safetensors" if kind is AvatarKind.FACE else "ip-adapter_sd15.safetensors"
        files = IPFiles(root / "models" / weight, root / "models" / "image_encoder")
    elif family == "sdxl":
        plus_face = IPFiles(
            root / "sdxl_models" / "ip-adapter-plus-face_sdxl_vit-h.safetensors", root / "models" / "image_encoder"
        )
        files = IPFiles(root / "sdxl_models" / "ip-adapter_sdxl.safetensors", root / "sdxl_models" / "image_encoder")
        if kind is AvatarKind.FACE and plus_face.weights.is_file() and (plus_face.encoder / "config.json").is_file():
            files = plus_face
    else:
        raise UnsupportedFeature(f"{what}: no IP-Adapter is known for {family} models")
    if not files.weights.is_file():
        raise UnsupportedFeature(f"{what} needs the IP-Adapter file {files.weights} (not found)")
    if not (files.encoder / "config.json").is_file():
        raise UnsupportedFeature(f"{what} needs the IP-Adapter image encoder {files.encoder}/ (not found)")
    return files


def controlnet_folder(root: Path, family: str) -> Path:
    return Path(root) / f"openpose-{family}"


def _tiny_note(width: int | None, dims: ModelDims) -> str:
    if width is not None and width <= TINY_WIDTH and dims.cross_attention_dim >= REAL_WIDTH:
        return " (it is one of pictale's tiny test/demo adapters: it fits only the tiny demo model)"
    return ""


def _shapes(path: Path) -> dict[str, list[int]]:
    try:
        return {k: list(v.get("shape") or []) for k, v in read_safetensors_header(path).items()}
    except PictaleError as exc:
        raise UnsupportedFeature(f"the adapter file {path} cannot be read: {exc.message}") from None


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedFeature(f"{path} cannot be read: {exc}") from None
    return data if isinstance(data, dict) else {}


def ip_adapter_misfit(files: IPFiles, dims: ModelDims) -> str | None:
    """Why the IP-Adapter `files` cannot run on the model of `dims` (None: they fit)."""
    shapes = _shapes(files.weights)
    layers = sorted(
        (int(k.split(".")[1]), shape)
        for k, shape in shapes.items()
        if k.startswith("ip_adapter.") and k.endswith(".to_k_ip.weight") and k.split(".")[1].isdigit()
    )
    widths = [shape[1] for _, shape in layers if len(shape) == 2]
    cross = widths[0] if widths else None
    note = _tiny_note(cross, dims)
    if cross is not None and cross != dims.cross_attention_dim:
        return f"its layers take cross-attention width {cross}, the model's is {dims.cross_attention_dim}{note}"
    if len(layers) != len(dims.ip_hidden):
        return f"it has {len(layers)} cross-attention layers, the model has {len(dims.ip_hidden)}{note}"
    for (k, shape), hidden in zip(layers, dims.ip_hidden, strict=True):
        if shape != [hidden, dims.cross_attention_dim]:
            return f"layer {k} is {shape}, the model needs {[hidden, dims.cross_attention_dim]}{note}"
    for key in ("image_proj.norm.weight", "image_proj.proj.3.weight", "image_proj.norm_out.weight"):
        if key in shapes and shapes[key] != [dims.cross_attention_dim]:
            return f"its image projection gives width {shapes[key][0]}, the model takes {dims.cross_attention_dim}"
    encoder = _config(files.encoder / "config.json")
    encoder = encoder.get("vision_config", encoder) if "hidden_size" not in encoder else encoder
    if "image_proj.proj.weight" in shapes:
        wanted, gives = shapes["image_proj.proj.weight"][-1], encoder.get("projection_dim")
    else:
        first = shapes.get("image_proj.proj.0.weight") or shapes.get("image_proj.proj_in.weight")
        wanted, gives = (first[-1] if first else None), encoder.get("hidden_size")
    if wanted is not None and gives is not None and wanted != gives:
        return (
            f"its image projection takes {wanted}-wide image features, the image encoder {files.encoder}/ gives {gives}"
        )
    return None


def controlnet_misfit(folder: Path, dims: ModelDims) -> str | None:
    """Why the ControlNet in `folder` cannot run beside the model of `dims` (None: it fits)."""
    config = _config(folder / "config.json")
    channels = tuple(config.get("block_out_channels") or ())
    cross = config.get("cross_attention_dim")
    note = _tiny_note(cross if isinstance(cross, int) else None, dims)
    if channels and channels != dims.block_out_channels:
        return f"its blocks have {list(channels)} channels, the model's UNet {list(dims.block_out_channels)}{note}"
    if isinstance(cross, int) and cross != dims.cross_attention_dim:
        return f"it takes cross-attention width {cross}, the model's is {dims.cross_attention_dim}{note}"
    return None


def check_adapter_fit(
    avatars: Iterable[AvatarRef], dims: ModelDims, ip_root: Path | None, controlnet_root: Path | None
) -> None:
    """UnsupportedFeature (422) naming the file and the model when a face, style or pose avatar of the job would
    use an adapter made for another model; missing files get their own 422 from `ip_files` / the engine."""
    if dims.family in T5_FAMILIES:
        return  # SD3's IP-Adapter is checked by `engine.families.sd3.ip_adapter`
    for ref in applied(avatars):
        if ref.kind in IP_KINDS:
            files = ip_files(ip_root, dims.family, ref.kind, ref.name)
            why = ip_adapter_misfit(files, dims)
            if why:
                raise UnsupportedFeature(
                    f"{ref.kind.value} avatar {ref.name!r}: the IP-Adapter file {files.weights} does not fit the "
                    f"loaded model {dims.label}: {why}",
                    param="prompt",
                )
        elif ref.kind is AvatarKind.POSE and controlnet_root is not None:
            folder = controlnet_folder(controlnet_root, dims.family)
            if (folder / "config.json").is_file():
                why = controlnet_misfit(folder, dims)
                if why:
                    raise UnsupportedFeature(
                        f"pose avatar {ref.name!r}: the OpenPose ControlNet {folder}/ does not fit the loaded "
                        f"model {dims.label}: {why}",
                        param="prompt",
                    )


@dataclass(frozen=True)
class FluxDims:
    """The loaded Flux transformer's shapes that the IP-Adapter and ControlNet must match."""

    name: str
    inner_dim: int
    joint_attention_dim: int
    num_layers: int
    in_channels: int

    @property
    def label(self) -> str:
        return f"{self.name!r} (FLUX.1, width {self.inner_dim}, text width {self.joint_attention_dim})"


def flux_dims(config: Any, name: str) -> FluxDims:
    """FluxDims from a FluxTransformer2DModel config (a mapping)."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return FluxDims(
        name, inner, int(config["joint_attention_dim"]), int(config["num_layers"]), int(config["in_channels"])
    )


def flux_ip_misfit(root: Path, dims: FluxDims) -> str | None:
    """Why the XLabs IP-Adapter under `root` cannot run on the Flux model of `dims` (None: it fits or is absent)."""
    weights, encoder = Path(root) / FLUX_IP_WEIGHTS, Path(root) / FLUX_IP_ENCODER
    if not weights.is_file() or not (encoder / "config.json").is_file():
        return None  # missing files have their own 422 (`support.missing_flux_ip_adapter`)
    shapes = _shapes(weights)
    layers = [s for k, s in shapes.items() if k.startswith("double_blocks.") and k.endswith("_k_proj.weight")]
    norm = shapes.get("ip_adapter_proj_model.norm.weight")
    if norm is not None and norm != [dims.joint_attention_dim]:
        return f"its image tokens are {norm[0]} wide, the model's text width is {dims.joint_attention_dim}"
    if len(layers) != dims.num_layers:
        return f"it has {len(layers)} double-block layers, the model has {dims.num_layers}"
    if any(shape != [dims.inner_dim, dims.joint_attention_dim] for shape in layers):
        return f"its layers are {layers[0]}, the model needs {[dims.inner_dim, dims.joint_attention_dim]}"
    config = _config(encoder / "config.json")
    gives = config.get("vision_config", config).get("projection_dim")
    wanted = (shapes.get("ip_adapter_proj_model.proj.weight") or [None])[-1]
    if wanted is not None and gives is not None and wanted != gives:
        return f"it takes {wanted}-wide image embeddings, the image encoder {encoder}/ gives {gives}"
    return None


def flux_controlnet_misfit(folder: Path, dims: FluxDims) -> str | None:
    """Why the Flux ControlNet in `folder` cannot run beside the model of `dims` (None: it fits or is absent)."""
    if not (folder / "config.json").is_file():
        return None
    config = _config(folder / "config.json")
    inner = int(config.get("num_attention_heads", 0)) * int(config.get("attention_head_dim", 0))
    if inner and inner != dims.inner_dim:
        return f"it is {inner} wide, the model {dims.inner_dim}"
    for key in ("joint_attention_dim", "in_channels"):
        if config.get(key) not in (None, getattr(dims, key)):
            return f"its {key} is {config[key]}, the model's {getattr(dims, key)}"
    return None


def check_flux_adapter_fit(
    avatars: Iterable[AvatarRef], dims: FluxDims, ip_root: Path | None, controlnet_root: Path | None
) -> None:
    """UnsupportedFeature (422) naming the file and the model when a face, style or pose avatar of a Flux job would
    use an IP-Adapter or ControlNet made for another Flux-shaped model (e.g. the real ones beside the tiny model)."""
    for ref in applied(avatars):
        if ref.kind in IP_KINDS and ip_root is not None and (why := flux_ip_misfit(ip_root, dims)):
            where = Path(ip_root) / FLUX_IP_WEIGHTS
            raise UnsupportedFeature(
                f"{ref.kind.value} avatar {ref.name!r}: the Flux IP-Adapter {where} does not fit the loaded model "
                f"{dims.label}: {why}",
                param="prompt",
            )
        folder = Path(controlnet_root or ".") / FLUX_CONTROLNET
        if (
            ref.kind is AvatarKind.POSE
            and controlnet_root is not None
            and (why := flux_controlnet_misfit(folder, dims))
        ):
            raise UnsupportedFeature(
                f"pose avatar {ref.name!r}: the Flux ControlNet {folder}/ does not fit the loaded model "
                f"{dims.label}: {why}",
                param="prompt",
            )


_FLUX_MARKS = ("single_transformer_blocks", "double_blocks", "single_blocks", "x_embedder", "guidance_embedder")


def lora_family_hint(path: Path) -> str | None:
    """ "flux" for Flux layers (any format) or width, "sd3" for other transformer keys, "sdxl" for keys of SDXL's
    second text encoder; None when it cannot tell."""
    header = read_safetensors_header(path)
    if any(mark in k for k in header for mark in _FLUX_MARKS):
        return "flux"
    if any(k.startswith(("transformer.", "lora_transformer_")) for k in header):
        to_q = [
            v.get("shape") or [] for k, v in header.items() if "attn.to_q.lora_A" in k or "attn_to_q.lora_down" in k
        ]
        return "flux" if any(s[-1:] == [3072] for s in to_q) else "sd3"
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in header):
        return "sdxl"
    return None
