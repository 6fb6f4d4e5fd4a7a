"""What a training is: its settings (`TrainingSpec`), the kind presets, and the photos it trains on. Pure Python.

The service builds a TrainingSpec from the request (API or CLI) with `preset_defaults(kind, family)` filling what
the client left out; `photos.prepare` turns uploads into PreparedPhoto files in the training's work dir; the
loop (`training.loop.LoraTrainer`) reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("face", "character", "style", "object")
STAGES = ("checking", "preparing", "caching", "training", "sampling", "saving", "done")


@dataclass(frozen=True)
class TrainingSpec:
    name: str
    """The LoRA avatar's name once registered (`<be-lora:NAME:0.8>`)."""
    trigger: str
    """The trigger word in every caption (`sasha_person`)."""
    kind: str
    """face | character | style | object: the preset."""
    base_model: str
    """The base checkpoint's path (folder or file) as `engine.models.resolve_model` gives it."""
    family: str
    """"sd15", "sdxl" or "flux" (FLUX.1 dev)."""
    class_word: str = "person"
    rank: int = 16
    alpha: float = 16.0
    steps: int = 1500
    learning_rate: float = 1e-4
    optimizer: str = "adamw"
    """adamw | adamw8bit (bitsandbytes on CUDA) | prodigy."""
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    train_text_encoder: bool = False
    flip: bool = False
    """Horizontal flip augmentation (off for faces: faces are not symmetric)."""
    min_snr_gamma: float | None = 5.0
    """Epsilon/v models: min-SNR-gamma loss weighting (None: plain MSE). Unused on Flux."""
    checkpoint_every: int = 250
    """Steps between saved states (resume points) and samples."""
    sample_every: int = 250
    sample_prompts: tuple[str, ...] = ()
    """Prompts of the samples (the trigger is put in where `{trigger}` appears); empty: the preset's."""
    sample_seeds: tuple[int, ...] = (1, 2)
    early_stop: bool = True
    """Stop when likeness has fallen at two samples in a row after its best."""
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    """no | fp16 | bf16 (GPU); trainable LoRA weights stay fp32."""
    extra: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PreparedPhoto:
    """A photo ready to train on: an RGB PNG in the work dir (oriented, cropped to its bucket) and its caption."""

    path: str
    caption: str
    source: str
    """The file name the user gave (for messages)."""
    width: int
    height: int
    caption_from: str = "template"
    """file (the user's .txt) | template (trigger, class word, framing) | model (`training.captioner`)."""


# -- what a runner reports (read by `service.trainings`)


@dataclass(frozen=True)
class Sample:
    step: int
    images: tuple[Path, ...]
    """PNG files (under the training's work dir) in the order of the spec's sample prompts and seeds."""
    scores: dict[str, float | None] = field(default_factory=dict)
    prompts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path | None = None


@dataclass(frozen=True)
class Choice:
    step: int
    scores: dict[str, float | None]
    reason: str
    """Why this checkpoint: "best likeness (0.74) at step 800; likeness fell after it", etc."""
