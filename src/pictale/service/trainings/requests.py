"""A training request's fields checked one by one (each 4xx names its field) and turned into a TrainingSpec.

The kind's preset (`training.presets.preset_defaults(kind, family)`) fills what the client left out. Only SD 1.5,
SDXL and FLUX.1 dev bases can be trained; another family is a 422 naming the model and why.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from pictale.avatars.validate import check_name
from pictale.core.errors import InvalidRequest, ModelNotFound, UnsupportedFeature
from pictale.core.limits import SEED_MAX, check_seed
from pictale.core.types import ModelEntry
from pictale.service.flux import entry_variant
from pictale.training.spec import KINDS, TrainingSpec

TRAINABLE = {"sd15": "SD 1.5", "sdxl": "SDXL", "flux": "FLUX.1 dev"}
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
CLASS_WORDS = {"face": "person", "character": "character", "style": "style", "object": "object"}
TRIGGER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{1,63}$")
MAX_SAMPLE_PROMPTS = 8
RANGES = {
    "rank": (1, 256),
    "steps": (1, 100_000),
    "resolution": (256, 2048),
    "batch_size": (1, 16),
    "checkpoint_every": (1, 100_000),
}


@dataclass(frozen=True)
class TrainingFields:
    """What a client sends (API form fields or CLI options); None: the preset's value."""

    name: str
    kind: str
    trigger: str | None = None
    base_model: str | None = None
    rank: int | None = None
    steps: int | None = None
    learning_rate: float | None = None
    optimizer: str | None = None
    resolution: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    sample_prompts: tuple[str, ...] = ()
    character: str | None = None
    checkpoint_every: int | None = None
    """Steps between saved states (resume points), each sampled and scored; None: the preset's."""


def check_fields(fields: TrainingFields, max_prompt_chars: int) -> TrainingFields:
    """Every field on its own (no model, no database): InvalidRequest naming the first bad one."""
    if fields.kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)} (got {fields.kind!r})", param="kind")
    check_name(fields.name, param="name")
    if fields.trigger is not None and not TRIGGER_RE.match(fields.trigger):
        raise InvalidRequest(
            f"trigger {fields.trigger!r} is not allowed: one word of 2-64 letters, digits, _ or - (e.g. sasha_person)",
            param="trigger",
        )
    for name, (low, high) in RANGES.items():
        value = getattr(fields, name)
        if value is not None and not low <= value <= high:
            raise InvalidRequest(f"{name} must be from {low} to {high} (got {value})", param=name)
    if fields.resolution is not None and fields.resolution % 64:
        raise InvalidRequest(f"resolution must be a multiple of 64 (got {fields.resolution})", param="resolution")
    lr = fields.learning_rate
    if lr is not None and (not math.isfinite(lr) or not 0 < lr <= 10):
        raise InvalidRequest(f"learning_rate must be above 0 and at most 10 (got {lr})", param="learning_rate")
    if fields.optimizer is not None and fields.optimizer not in OPTIMIZERS:
        raise InvalidRequest(f"optimizer must be one of {', '.join(OPTIMIZERS)}", param="optimizer")
    if fields.seed is not None:
        check_seed(fields.seed)
    if len(fields.sample_prompts) > MAX_SAMPLE_PROMPTS:
        raise InvalidRequest(f"at most {MAX_SAMPLE_PROMPTS} sample_prompts", param="sample_prompts")
    for prompt in fields.sample_prompts:
        if not prompt.strip() or len(prompt) > max_prompt_chars:
            raise InvalidRequest(
                f"each sample prompt must have 1 to {max_prompt_chars} characters", param="sample_prompts"
            )
    return fields


def trainable_family(entry: ModelEntry, shown: str) -> str:
    """The family of a base model that can be trained; else 422 naming the model and the families that can."""
    family = entry.family
    if family == "flux" and entry_variant(entry) != "dev":
        raise UnsupportedFeature(
            f"base model {shown!r} is FLUX.1 {entry_variant(entry) or 'of unknown variant'}: only FLUX.1 dev is "
            "trained (schnell and Kontext are distilled for inference)",
            param="base_model",
        )
    if family not in TRAINABLE:
        raise UnsupportedFeature(
            f"base model {shown!r} is {family or 'of an unknown family'}: LoRA training takes "
            f"{', '.join(TRAINABLE.values())} bases",
            param="base_model",
        )
    return family


def find_base(service: Any, wanted: str | None) -> ModelEntry:
    """The base model: the named one (404 naming it), else the configured or loaded checkpoint."""
    if wanted:
        try:
            return service.catalog.find(wanted)
        except ModelNotFound:
            raise ModelNotFound(f"base model {wanted!r} not found", param="base_model") from None
    configured = service.options.get("sd_model_checkpoint") or service.settings.model
    if configured and str(configured).strip().lower() != "tiny":
        return service.catalog.find(str(configured))
    if service.current_model is not None:
        return service.current_model
    raise InvalidRequest("no base model: name one in base_model", param="base_model")


def build_spec(fields: TrainingFields, entry: ModelEntry, family: str, vram_gb: float | None = None) -> TrainingSpec:
    """The spec: the preset of (kind, family) and, on a GPU of `vram_gb`, its memory preset (gradient
    checkpointing, mixed precision, 8-bit Adam, an fp8 Flux base), then what the client set; a random seed when
    none was given."""
    values: dict[str, Any] = {"class_word": CLASS_WORDS[fields.kind], "resolution": 512 if family == "sd15" else 1024}
    values.update(_preset(fields.kind, family, vram_gb))
    for name in ("rank", "steps", "learning_rate", "optimizer", "resolution", "batch_size", "checkpoint_every"):
        if getattr(fields, name) is not None:
            values[name] = getattr(fields, name)
    if fields.checkpoint_every is not None:
        values["sample_every"] = fields.checkpoint_every
    if fields.rank is not None:
        values["alpha"] = float(fields.rank)  # alpha = rank: the presets' rule
    seed = fields.seed if fields.seed is not None and fields.seed >= 0 else random.randrange(SEED_MAX)
    if fields.sample_prompts:
        values["sample_prompts"] = tuple(fields.sample_prompts)
    trigger = fields.trigger or f"{fields.name}_{values['class_word']}"
    known = {f.name for f in dataclasses.fields(TrainingSpec)}
    values = {k: v for k, v in values.items() if k in known}
    values.update(name=fields.name, trigger=trigger, kind=fields.kind, base_model=entry.filename, family=family)
    values["seed"] = seed
    return TrainingSpec(**values)


def _preset(kind: str, family: str, vram_gb: float | None = None) -> dict[str, Any]:
    try:
        from pictale.training.presets import preset_defaults
    except ImportError:  # an installation without the trainer: TrainingSpec's defaults
        return {}
    try:
        preset = preset_defaults(kind, family, vram_gb)
    except ValueError as exc:  # e.g. SDXL or FLUX.1 on a card below 12 GB
        raise InvalidRequest(f"{exc}", param="base_model") from None
    return dataclasses.asdict(preset) if dataclasses.is_dataclass(preset) else dict(preset)


def spec_to_json(spec: TrainingSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_json(data: dict[str, Any]) -> TrainingSpec:
    data = dict(data)
    for name in ("sample_prompts", "sample_seeds"):
        if name in data:
            data[name] = tuple(data[name])
    return TrainingSpec(**data)


def gpu_gb(service: Any) -> float | None:
    """The GPU's memory in GB for the memory presets (what the engine's `/memory` says); None without CUDA or
    before an engine exists (the CPU trains without memory presets)."""
    if getattr(service, "_engine", None) is None:
        return None
    try:
        total = service.engine.memory().get("system", {}).get("total")
    except Exception:  # no CUDA, a stand-in engine: no memory preset
        return None
    return total / 2**30 if total else None
