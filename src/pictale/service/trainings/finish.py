"""The end of a training: its LoRA becomes the owner's avatar (with its trigger word) and, when asked, a character.

The avatar registry stores the file atomically (validated, moved into place, then one transaction), so a training
that is cancelled or crashes leaves a complete avatar or none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pictale.core.errors import PictaleError
from pictale.core.types import AvatarKind
from pictale.service.trainings.views import LORA_WEIGHT
from pictale.training.spec import TrainingSpec


def register(avatars: Any, characters: Any, training: dict, spec: TrainingSpec, lora: Path) -> dict[str, Any]:
    """Register the LoRA as `spec.name`; with a `character` asked, make it (its own failure is reported, not fatal)."""
    owner = training["owner"]
    with lora.open("rb") as f:
        avatars.create(
            owner, AvatarKind.LORA, spec.name, [(f"{spec.name}.safetensors", f)], trigger_words=[spec.trigger]
        )
    out: dict[str, Any] = {"avatar": spec.name, "character": None, "character_error": None}
    character = training["request"].get("character")
    if character and characters is not None:
        description = spec.trigger if spec.class_word in spec.trigger else f"{spec.trigger} {spec.class_word}"
        try:
            characters.create(owner, character, description=description, avatars=f"<be-lora:{spec.name}:{LORA_WEIGHT}>")
            out["character"] = character
        except PictaleError as exc:  # e.g. the name was taken meanwhile: the avatar stays, the client is told
            out["character_error"] = exc.message
    return out
