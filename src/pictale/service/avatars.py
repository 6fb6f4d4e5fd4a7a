"""Avatars for one caller: the resolver the prompt compiler asks, and the infotext entries of a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pictale.core.types import AvatarKind, AvatarRef
from pictale.engine.hashes import HashCache
from pictale.prompt.compile import describe, lora_hashes

IP_ADAPTER_NOTE = (
    "IP-Adapter avatars (face/style) can override a LoRA's style; lower their weights if the LoRA style is lost"
)


class OwnerResolver:
    """Resolves `<be-...>` names among the caller's own avatars; `<lora:...>` also finds files in the Lora dir."""

    def __init__(self, registry: Any | None, owner: str, loras_dir: Path) -> None:
        self.registry = registry
        self.owner = owner
        self.loras_dir = loras_dir

    def resolve(self, kind: AvatarKind, name: str, weight: float) -> AvatarRef | None:
        if self.registry is not None:
            ref = self.registry.resolve(self.owner, kind, name, weight)
            if ref is not None:
                return ref
        if kind is AvatarKind.LORA:
            return self._lora_file(name, weight)
        return None

    def names(self, kind: AvatarKind) -> list[str]:
        names = list(self.registry.names(self.owner, kind)) if self.registry is not None else []
        if kind is AvatarKind.LORA and self.loras_dir.is_dir():
            names += sorted(p.stem for p in self.loras_dir.rglob("*.safetensors"))
        return names

    def _lora_file(self, name: str, weight: float) -> AvatarRef | None:
        """A1111's LoRA lookup: a `.safetensors` file in the Lora dir whose stem is the name."""
        if not self.loras_dir.is_dir():
            return None
        matches = [p for p in self.loras_dir.rglob("*.safetensors") if p.stem.lower() == name.lower()]
        if not matches:
            return None
        path = matches[0]
        cache = HashCache(self.loras_dir)
        digest = cache.sha256(path)
        cache.save()
        return AvatarRef(
            kind=AvatarKind.LORA,
            name=path.stem,
            weight=weight,
            files=(path,),
            digest=digest,
            source="lora-file",
        )


def avatar_infotext(avatars: tuple[AvatarRef, ...]) -> dict[str, Any]:
    """Infotext keys for the avatars of a job: which, at what weight, LoRA hashes, and the IP-Adapter note."""
    if not avatars:
        return {}
    kinds = {a.kind for a in avatars if a.weight != 0}
    params: dict[str, Any] = {"Avatars": describe(avatars), "Lora hashes": lora_hashes(avatars)}
    if AvatarKind.LORA in kinds and kinds & {AvatarKind.FACE, AvatarKind.STYLE}:
        params["Avatar note"] = IP_ADAPTER_NOTE
    return params
