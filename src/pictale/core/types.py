"""Frozen types shared by every layer. Every dialect translates its wire shape to a GenerationSpec."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image


class Mode(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class AvatarKind(StrEnum):
    FACE = "face"
    STYLE = "style"
    POSE = "pose"
    LORA = "lora"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class AvatarRef:
    """An avatar resolved for one job: what the engine needs to apply it, nothing about who owns it."""

    kind: AvatarKind
    name: str
    weight: float
    files: tuple[Path, ...]
    """Blob paths: images for face/style/pose, one .safetensors for lora/embedding."""
    digest: str
    """Content hash of the avatar's files: the engine's cache key (adapter names, image embeddings)."""
    token: str | None = None
    """Embeddings: the token the prompt uses for it (internal, unique per avatar)."""
    family: str | None = None
    """lora/embedding: the base family it fits ("sd15", "sdxl")."""
    trigger_words: tuple[str, ...] = ()
    source: str = "avatar"
    """"avatar" (<be-...>), or "lora-file" for an A1111 <lora:...> file from the models dir."""


@dataclass(frozen=True)
class HiresSpec:
    """A1111's hires fix: a second img2img pass at a larger size."""

    scale: float = 2.0
    upscaler: str = "Latent"
    second_pass_steps: int = 0
    resize_x: int = 0
    resize_y: int = 0
    denoising_strength: float = 0.7
    sampler: str | None = None
    scheduler: str | None = None
    prompt: str = ""
    negative_prompt: str = ""

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """A1111: hr_resize_x/y win over hr_scale; one of them zero keeps the aspect ratio; floored to 8."""
        if self.resize_x == 0 and self.resize_y == 0:
            w, h = int(width * self.scale), int(height * self.scale)
        elif self.resize_y == 0:
            w, h = self.resize_x, self.resize_x * height // width
        elif self.resize_x == 0:
            w, h = self.resize_y * width // height, self.resize_y
        else:
            w, h = self.resize_x, self.resize_y
        return w // 8 * 8, h // 8 * 8


@dataclass(frozen=True)
class GenerationSpec:
    """One generation request, independent of dialect. Seeds are resolved by the service, not here."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    steps: int = 50
    cfg_scale: float = 7.0
    distilled_cfg_scale: float | None = None
    """FLUX.1 dev/Kontext: the distilled guidance fed to the transformer (Forge's "Distilled CFG Scale"); None:
    the model's profile. `cfg_scale` above 1 is true CFG with the negative prompt there, at twice the cost."""
    t5_tokens: int | None = None
    """T5 family: the T5 sequence length of this job (the service sets it for FLUX.1 jobs from the model's profile,
    or `Settings.t5_max_tokens` when that was set explicitly); None: the engine's own `t5_max_tokens`."""
    width: int = 512
    height: int = 512
    sampler: str = "Euler"
    scheduler: str = "automatic"
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    tiling: bool = False
    model: str | None = None
    """Checkpoint title/name to use for this job; None keeps the loaded one."""
    hires: HiresSpec | None = None
    avatars: tuple[AvatarRef, ...] = ()
    """Avatars resolved from the prompt's tokens, in token order (weight 0 ones included, for the infotext)."""
    # img2img / inpaint
    init_images: tuple[Image.Image, ...] = ()
    mask: Image.Image | None = None
    denoising_strength: float = 0.75
    resize_mode: int = 0
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: bool = False
    # bookkeeping
    styles: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def mode(self) -> Mode:
        if not self.init_images:
            return Mode.TXT2IMG
        return Mode.INPAINT if self.mask is not None else Mode.IMG2IMG

    @property
    def total_images(self) -> int:
        return self.batch_size * self.n_iter


@dataclass(frozen=True)
class Character:
    """A story character of one key: `<be-char:name>` in a prompt expands to its prefix and avatar tokens."""

    name: str
    description: str = ""
    """The prompt prefix: a detailed description (long prompts pay off on T5-family models)."""
    avatars: str = ""
    """Avatar tokens that come with the character, e.g. `<be-face:lucy:0.4> <be-lora:toy:0.8>`."""
    negative_prompt: str = ""
    seed_policy: str = "random"
    """"random": a request's seed -1 stays random; "fixed": seed -1 becomes `seed`, so pictures repeat."""
    seed: int | None = None

    @property
    def prefix(self) -> str:
        """What `<be-char:name>` becomes: the description, then the avatar tokens."""
        return ", ".join(part for part in (self.description.strip(), self.avatars.strip()) if part)


@dataclass(frozen=True)
class ModelEntry:
    """A checkpoint that can be loaded: what `/sdapi/v1/sd-models` lists."""

    title: str
    """A1111-style title: `name [hash10]`, or the name when no hash is known."""
    model_name: str
    filename: str
    source: str
    """"folder" (diffusers layout), "single_file" (.safetensors), "hub" or "tiny"."""
    family: str | None = None
    """"sd15", "sdxl" (detected when loaded or scanned)."""
    sha256: str | None = None

    @property
    def short_hash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None


@dataclass
class StepInfo:
    """Progress of a running job: what the sampler reports each step."""

    step: int
    total: int
    batch_no: int = 0
    batch_count: int = 1


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, a `--api-auth` Basic user, or the local user in open mode.

    `id` owns avatars (and later stories and jobs); it never changes for a key, whatever its name."""

    id: str
    name: str
    is_admin: bool = False


LOCAL_PRINCIPAL = Principal("local", "local", True)
"""The single local user when the server runs open (no API keys, no `--api-auth`), and the CLI's default owner."""
