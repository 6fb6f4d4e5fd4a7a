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

    def embedding_tokens(self) -> dict[str, str]:
        """The caller's embedding tokens -> avatar names: typing a token in a prompt applies its embedding."""
        return dict(self.registry.tokens(self.owner)) if self.registry is not None else {}

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


def a1111_lora_avatars(registry: Any | None, owner: str) -> list[dict[str, Any]]:
    """The caller's LoRA avatars in A1111's `/sdapi/v1/loras` shape (`<lora:NAME:w>` finds them)."""
    if registry is None:
        return []
    return [
        {
            "name": info.name,
            "alias": info.name,
            "path": f"/v1/avatars/lora/{info.name}",
            "metadata": {"pictale_avatar": "lora", "trigger_words": ", ".join(info.trigger_words)},
        }
        for info in registry.list(owner, AvatarKind.LORA)
    ]


def a1111_embeddings(registry: Any | None, owner: str, family: str | None) -> dict[str, Any]:
    """The caller's embedding avatars in A1111's `/sdapi/v1/embeddings` shape, keyed by the token a prompt types;
    those made for another model family than the loaded one are `skipped`, as A1111 does."""
    from pictale.engine.models import read_safetensors_header  # header only: no torch

    out: dict[str, Any] = {"loaded": {}, "skipped": {}}
    if registry is None:
        return out
    for info in registry.list(owner, AvatarKind.EMBEDDING):
        ref = registry.resolve(owner, AvatarKind.EMBEDDING, info.name, 1.0)
        shapes = [v.get("shape") or [] for v in read_safetensors_header(ref.files[0]).values()] if ref else []
        shape = next((s for s in shapes if s), [])
        entry = {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": shape[-1] if shape else info.cross_attention_dim,
            "vectors": shape[0] if len(shape) == 2 else 1,
        }
        fits = family is None or info.family is None or info.family == family
        out["loaded" if fits else "skipped"][info.token or info.name] = entry
    return out
