"""Which avatar kinds each model family can apply, and the 422 messages when it cannot. Pure Python, no torch.

The T5 family (SD3) has no IP-Adapter, OpenPose ControlNet or CLIP textual inversion in pictale: face,
style, pose and embedding avatars are refused on it, before the job is queued (`service.families`) and
again in the engine. LoRA avatars work on every family, but only on the family they were trained for.
"""

from __future__ import annotations

from collections.abc import Iterable

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef

T5_FAMILIES = frozenset({"sd3"})
"""Families whose pipeline encodes prompts itself with a T5 encoder (long prompts, flow-matching samplers)."""

FAMILY_LABELS = {"sd15": "SD 1.5", "sd2": "SD 2", "sdxl": "SDXL", "sd3": "SD3"}

_NEEDS = {
    AvatarKind.FACE: "need an IP-Adapter",
    AvatarKind.STYLE: "need an IP-Adapter",
    AvatarKind.POSE: "need an OpenPose ControlNet",
    AvatarKind.EMBEDDING: "are textual inversions for CLIP-only text encoders",
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
    if family not in T5_FAMILIES:
        return None
    return (
        f"{ref.kind.value} avatars ({avatar_token(ref)}) {_NEEDS[ref.kind]}, which pictale does not support on "
        f"{family_label(family)} models; use a LoRA avatar or an SD 1.5/SDXL model"
    )


def check_avatars(refs: Iterable[AvatarRef], family: str | None, *, param: str | None = None) -> None:
    """Raise UnsupportedFeature (422) for the first avatar of weight > 0 the family cannot apply."""
    for ref in refs:
        if ref.weight == 0:
            continue  # weight 0 applies nothing: the image is the one without the token
        message = unsupported_avatar_message(ref, family)
        if message is not None:
            raise UnsupportedFeature(message, param=param)
