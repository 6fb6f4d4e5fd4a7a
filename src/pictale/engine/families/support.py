"""Which avatar kinds each model family can apply, and the 422 messages when it cannot. Pure Python, no torch.

The T5 families: SD3 applies LoRA avatars and face/style avatars through diffusers' SD3 IP-Adapter
(`families.sd3.ip_adapter`), which has a single image slot: one face or style token per SD3 job; pose and
embedding avatars are refused. FLUX.1 applies LoRA, face/style (the XLabs IP-Adapter, one token per job, all of
its images) and pose (a union ControlNet); embedding avatars are refused (T5 has no textual inversion). Each
rule answers before the job is queued (`service.families`) and again in the engine. LoRA avatars work on every
family, but only on the family they were trained for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef

T5_FAMILIES = frozenset({"sd3", "flux"})
"""Families whose pipeline encodes prompts itself with a T5 encoder (long prompts, flow-matching samplers)."""

FAMILY_LABELS = {"sd15": "SD 1.5", "sd2": "SD 2", "sdxl": "SDXL", "sd3": "SD3", "flux": "FLUX.1"}

IP_KINDS = frozenset({AvatarKind.FACE, AvatarKind.STYLE})
SD3_MAX_IP_AVATARS = 1
"""diffusers' SD3 IP-Adapter takes one adapter, one image embedding and one scale per call."""
FLUX_MAX_IP_AVATARS = 1
"""Face/style tokens per Flux job: the XLabs adapter is loaded once with one scale; it takes all the images of
that one avatar (`families.flux.ip_adapter`)."""
SD3_IP_WEIGHTS = Path("sd3") / "ip-adapter.safetensors"
SD3_IP_ENCODER = Path("sd3") / "image_encoder"
"""Where the SD3 IP-Adapter lives under the IP-Adapter root (see `engine.families.sd3.ip_adapter`)."""
FLUX_IP_WEIGHTS = Path("flux") / "ip_adapter.safetensors"
FLUX_IP_ENCODER = Path("flux") / "image_encoder"
"""Where the XLabs Flux IP-Adapter lives under the IP-Adapter root (see `engine.families.flux.ip_adapter`)."""
FLUX_CONTROLNET = "flux-union"
"""The Flux union ControlNet's folder under the ControlNet root (see `engine.families.flux.controlnet`)."""

_NEEDS = {
    AvatarKind.POSE: "need an OpenPose ControlNet",
    AvatarKind.EMBEDDING: "are textual inversions for CLIP-only text encoders",
}
_FAMILY_KINDS = {
    "sd3": frozenset({AvatarKind.LORA, AvatarKind.FACE, AvatarKind.STYLE}),
    "flux": frozenset({AvatarKind.LORA, AvatarKind.FACE, AvatarKind.STYLE, AvatarKind.POSE}),
}
"""Avatar kinds each T5-family model applies (the UNet families apply every kind)."""
_ALTERNATIVES = {
    "sd3": "use LoRA, face or style avatars, or an SD 1.5/SDXL model",
    "flux": "use LoRA, face, style or pose avatars, or an SD 1.5/SDXL model",
}


def family_label(family: str | None) -> str:
    return FAMILY_LABELS.get(family or "", family or "unknown")


def avatar_token(ref: AvatarRef) -> str:
    """How the prompt called the avatar: `<be-face:lucy>`, or `<lora:name>` for a Lora-dir file."""
    if ref.source == "lora-file":
        return f"<lora:{ref.name}>"
    return f"<be-{ref.kind.value}:{ref.name}>"


def lora_mismatch_message(name: str, trained_for: str, family: str) -> str:
    """The message the engine has always used for a LoRA of another family (sd15 vs sdxl, and now sd3)."""
    return f"lora {name!r} was trained for {trained_for}; the loaded model is {family}"


def unsupported_avatar_message(ref: AvatarRef, family: str | None) -> str | None:
    """Why `ref` cannot run on a model of `family` (None: it can, or the family is not known yet).

    Only what involves a T5-family model or LoRA is judged here; SD 1.5 vs SDXL mismatches stay where they
    always were, in the engine when the job runs.
    """
    if ref.kind is AvatarKind.LORA:
        t5 = family in T5_FAMILIES or ref.family in T5_FAMILIES
        if t5 and family and ref.family and ref.family != family:
            return lora_mismatch_message(ref.name, ref.family, family)
        return None
    if family not in T5_FAMILIES or ref.kind in _FAMILY_KINDS[family]:
        return None
    return (
        f"{ref.kind.value} avatars ({avatar_token(ref)}) {_NEEDS[ref.kind]}, which pictale does not support on "
        f"{family_label(family)} models; {_ALTERNATIVES[family]}"
    )


def applied(refs: Iterable[AvatarRef]) -> list[AvatarRef]:
    """The avatars a job applies: one per (kind, digest), in prompt order, without those whose weights sum to 0."""
    groups: dict[tuple[AvatarKind, str], list[AvatarRef]] = {}
    for ref in refs:
        groups.setdefault((ref.kind, ref.digest), []).append(ref)
    return [group[0] for group in groups.values() if math.fsum(r.weight for r in group) != 0]


def check_avatars(refs: Iterable[AvatarRef], family: str | None, *, param: str | None = None) -> None:
    """Raise UnsupportedFeature (422) for the first avatar of weight > 0 the family cannot apply, or for more
    IP-Adapter avatars than an SD3 job takes."""
    refs = list(refs)
    for ref in refs:
        if ref.weight == 0:
            continue  # weight 0 applies nothing: the image is the one without the token
        message = unsupported_avatar_message(ref, family)
        if message is not None:
            raise UnsupportedFeature(message, param=param)
    limit = _IP_LIMITS.get(family or "")
    ip = [ref for ref in applied(refs) if ref.kind in IP_KINDS]
    if limit is not None and len(ip) > limit[0]:
        tokens = ", ".join(avatar_token(ref) for ref in ip)
        raise UnsupportedFeature(
            f"{family_label(family)} models take one face or style avatar per job ({limit[1]}); this prompt has "
            f"{len(ip)}: {tokens}. Keep one of them{limit[2]}, or use an SD 1.5/SDXL model",
            param=param,
        )


_IP_LIMITS = {
    "sd3": (SD3_MAX_IP_AVATARS, "diffusers' SD3 IP-Adapter has a single image slot", ""),
    "flux": (
        FLUX_MAX_IP_AVATARS,
        "the XLabs Flux IP-Adapter is applied once, with one scale, to one avatar's images",
        " (a face avatar may hold several photos)",
    ),
}
"""Face/style tokens per job where the family's IP-Adapter takes fewer than the UNet's: (limit, why, hint)."""


def missing_sd3_ip_adapter(root: Path | None, ref: AvatarRef) -> str | None:
    """Why the SD3 IP-Adapter files for `ref` are not usable under `root` (None: both are there)."""
    what = f"{ref.kind.value} avatar {ref.name!r}"
    if root is None:
        return f"{what} needs IP-Adapter weights, but no IP-Adapter directory is configured"
    weights, encoder = Path(root) / SD3_IP_WEIGHTS, Path(root) / SD3_IP_ENCODER
    where = (
        f"save InstantX/SD3.5-Large-IP-Adapter's weights there as safetensors and its SigLIP image encoder "
        f"(google/siglip-so400m-patch14-384: config.json, model.safetensors, preprocessor_config.json) in {encoder}/"
    )
    if not weights.is_file():
        pickle = weights.with_suffix(".bin")
        found = f" ({pickle.name} is there, but only safetensors files are read)" if pickle.is_file() else ""
        return f"{what} on SD3 needs the IP-Adapter file {weights} (not found){found}: {where}"
    if not (encoder / "config.json").is_file():
        return f"{what} on SD3 needs the IP-Adapter image encoder {encoder}/ (not found): {where}"
    return None


def missing_flux_ip_adapter(root: Path | None, ref: AvatarRef) -> str | None:
    """Why the XLabs Flux IP-Adapter files for `ref` are not usable under `root` (None: both are there)."""
    what = f"{ref.kind.value} avatar {ref.name!r}"
    if root is None:
        return f"{what} needs IP-Adapter weights, but no IP-Adapter directory is configured"
    weights, encoder = Path(root) / FLUX_IP_WEIGHTS, Path(root) / FLUX_IP_ENCODER
    where = (
        "save XLabs-AI/flux-ip-adapter's (or flux-ip-adapter-v2's) weights there as safetensors and the CLIP image "
        f"encoder openai/clip-vit-large-patch14 as a CLIPVisionModelWithProjection (config.json, model.safetensors, "
        f"preprocessor_config.json) in {encoder}/"
    )
    if not weights.is_file():
        return f"{what} on FLUX.1 needs the IP-Adapter file {weights} (not found): {where}"
    if not (encoder / "config.json").is_file():
        return f"{what} on FLUX.1 needs the IP-Adapter image encoder {encoder}/ (not found): {where}"
    return None


_MISSING_IP = {"sd3": missing_sd3_ip_adapter, "flux": missing_flux_ip_adapter}


def check_ip_adapter_files(
    refs: Iterable[AvatarRef], family: str | None, root: Path | None, *, param: str | None = None
) -> None:
    """422 naming where the SD3 or Flux IP-Adapter files go when a face/style avatar of such a job finds none."""
    missing = _MISSING_IP.get(family or "")
    if missing is None:
        return  # SD 1.5/SDXL files depend on the kind and are looked up by the engine
    for ref in applied(refs):
        if ref.kind in IP_KINDS:
            message = missing(root, ref)
            if message is not None:
                raise UnsupportedFeature(message, param=param)
