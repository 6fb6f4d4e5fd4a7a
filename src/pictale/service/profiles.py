"""Few-step models (LCM, SD/SDXL Turbo, SDXL Lightning, Hyper-SD): detected or declared, with their defaults.

A client that asks for nothing gets "as fast as this model can go": the profile's sampler, schedule, steps
and CFG fill whatever the request left unset (`apply_profile`). Where the kind comes from, first match wins:

1. declared: `PICTALE_MODEL_KIND` / `--model-kind` (for the start-up model, see `declared_kind`);
2. a sidecar `<checkpoint>.pictale.json` beside the file or folder: `{"kind": "lightning", "steps": 4}`
   (optional `sampler`, `scheduler`, `cfg_scale`, `size` override the kind's defaults; kind "standard" stops
   detection for a model whose name only looks few-step);
3. a diffusers folder's files: an `LCMScheduler` scheduler, or a UNet with `time_cond_proj_dim` (LCM-distilled,
   guidance embedded in the timestep);
4. the name or path: lcm, turbo, lightning, hyper-sd, and a step count such as "4step" / "8steps".

Defaults, from the model cards (diffusers examples) translated to A1111 names:

- LCM (SimianLuo/LCM_Dreamshaper_v7, latent-consistency/lcm-lora-*): sampler LCM, 4 steps. CFG 1.5 for LCM-LoRA
  merges (real CFG, the cards say 1-2); 8.0 for LCM-distilled UNets, whose guidance is an embedding, not CFG
  (the cards use guidance_scale=8.0).
- Turbo (stabilityai/sd-turbo, sdxl-turbo): Euler a with trailing timesteps (SGM Uniform: with one step,
  linspace spacing would start at t=0), 1 step, no CFG, 512x512 (SDXL Turbo was trained at 512).
- Lightning (ByteDance/SDXL-Lightning): Euler, trailing timesteps (SGM Uniform), 4 steps (or the N of
  "Nstep" in the name), no CFG.
- Hyper-SD (ByteDance/Hyper-SD): DDIM with trailing timesteps (the card's scheduler), 8 steps or the name's N,
  no CFG; the "CFG" variants keep real CFG at 5.0 (the card recommends 5-8).

"No CFG" is written as CFG scale 1.0, not 0: diffusers disables CFG for any guidance_scale <= 1 (the same
image), while A1111 reads a pasted "CFG scale: 0" as "ignore the prompt". A client may still send 0.

FLUX.1 models (family "flux") get their variant's defaults instead (`service.flux` tells the variant), in Forge's
terms: CFG scale 1 (true CFG, with the negative prompt, only above 1, at twice the cost) and the distilled
guidance fed to the transformer's embedding, which schnell has not. schnell: Euler, 4 steps, 256 T5 tokens (its
limit); dev: Euler, 28 steps, distilled 3.5, 512 T5 tokens; Kontext: as dev with distilled 2.5 (BFL's example).
A "Nstep(s)" in the name sets the steps (distilled merges); a sidecar may set `distilled_cfg_scale` and `t5_tokens`
too. `t5_max_tokens` set explicitly (flag or environment) replaces the T5 length (schnell: at most 256).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pictale.core.config import Settings
from pictale.core.limits import T5_TOKENS_MAX
from pictale.core.types import ModelEntry
from pictale.service.flux import FLUX, entry_variant, model_variant

log = logging.getLogger(__name__)

STANDARD = "standard"
KINDS = (STANDARD, "lcm", "turbo", "lightning", "hyper")
SIDECAR_SUFFIX = ".pictale.json"
PROFILE_FIELDS = ("sampler", "scheduler", "steps", "cfg_scale")
STANDARD_SIZES = {"sdxl": 1024, "sd3": 1024, FLUX: 1024}
"""Default image side per family when neither client nor profile says; 512 for the others."""


@dataclass(frozen=True)
class Profile:
    """How to run a model by default: its kind and the sampler, schedule, steps and CFG scale that suit it."""

    kind: str
    sampler: str
    scheduler: str
    steps: int
    cfg_scale: float
    size: int | None = None
    """Default width and height when the model wants one (SDXL Turbo: 512); None: the family's default."""
    source: str = "default"
    """Where the kind came from: "declared", "sidecar", "files", "name" or "default"."""
    variant: str | None = None
    """FLUX.1 models: "schnell", "dev" or "kontext"; None for other families."""
    distilled_cfg_scale: float | None = None
    """FLUX.1 dev/Kontext: the distilled guidance (Forge's "Distilled CFG Scale"); None where the model has none."""
    t5_tokens: int | None = None
    """FLUX.1: the T5 sequence length of its jobs; None for other families (SD3 uses `t5_max_tokens`)."""

    @property
    def few_step(self) -> bool:
        """Timestep-distilled: the few-step kinds and FLUX.1 schnell."""
        return self.kind != STANDARD or self.variant == "schnell"

    @property
    def own_defaults(self) -> bool:
        """The model's defaults replace a dialect's fixed ones (A1111's 50 steps, CFG 7): few-step and Flux models."""
        return self.few_step or self.variant is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "few_step": self.few_step,
            "sampler": self.sampler,
            "scheduler": self.scheduler,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "size": self.size,
            "source": self.source,
            "variant": self.variant,
            "distilled_cfg_scale": self.distilled_cfg_scale,
            "t5_tokens": self.t5_tokens,
        }


_DEFAULTS: dict[str, Profile] = {
    STANDARD: Profile(STANDARD, "DPM++ 2M", "automatic", 20, 7.0),
    "lcm": Profile("lcm", "LCM", "automatic", 4, 1.5),
    "turbo": Profile("turbo", "Euler a", "sgm_uniform", 1, 1.0, size=512),
    "lightning": Profile("lightning", "Euler", "sgm_uniform", 4, 1.0),
    "hyper": Profile("hyper", "DDIM", "sgm_uniform", 8, 1.0),
}
_EMBEDDED_GUIDANCE_CFG = 8.0
_FLUX_DEFAULTS: dict[str, Profile] = {
    "schnell": Profile(STANDARD, "Euler", "automatic", 4, 1.0, variant="schnell", t5_tokens=256),
    "dev": Profile(STANDARD, "Euler", "automatic", 28, 1.0, variant="dev", distilled_cfg_scale=3.5, t5_tokens=512),
    "kontext": Profile(
        STANDARD, "Euler", "automatic", 28, 1.0, variant="kontext", distilled_cfg_scale=2.5, t5_tokens=512
    ),
}
_FLUX_T5_LIMIT = {"schnell": 256}
"""schnell was trained with 256 T5 tokens (diffusers: "cannot be more than 256"); dev and Kontext take 512."""

_STEPS = re.compile(r"(?<![a-z0-9])(\d{1,2})[-_ ]?steps?(?![a-z])")
_HYPER = re.compile(r"hyper[-_ ]?sd")
_CFG_WORD = re.compile(r"(?<![a-z])cfg(?![a-z])")


def model_profile(
    entry: ModelEntry, declared: str | None = None, *, variant: str | None = None, t5_max_tokens: int | None = None
) -> Profile:
    """The profile of `entry`: declared kind, else sidecar, else the folder's files, else its name. FLUX.1 models
    (`variant`, else told from the entry's files) get their variant's defaults; `t5_max_tokens`, when the user set
    it, their T5 length."""
    path = Path(entry.filename) if entry.source != "hub" else None
    sidecar = _read_sidecar(path) if path is not None else {}
    names = _names(entry)
    variant = variant or entry_variant(entry)
    if variant is not None:
        return _with_overrides(_flux_profile(variant, declared, sidecar, names, t5_max_tokens, path), sidecar)
    embedded = path is not None and _embedded_guidance(path)
    if declared:
        kind, source = _check_kind(declared, "PICTALE_MODEL_KIND"), "declared"
    elif sidecar.get("kind"):
        kind, source = _check_kind(str(sidecar["kind"]), _sidecar_path(path).name), "sidecar"
    elif path is not None and (embedded or _lcm_scheduler(path)):
        kind, source = "lcm", "files"
    elif found := _kind_from_name(names):
        kind, source = found, "name"
    else:
        kind, source = STANDARD, "default"
    profile = replace(_DEFAULTS[kind], source=source)
    if kind == STANDARD and entry.family == "sd3":  # flow matching: Euler, 28 steps (SD3's own defaults)
        profile = replace(profile, sampler="Euler", steps=28)
    if kind == "lcm" and embedded:
        profile = replace(profile, cfg_scale=_EMBEDDED_GUIDANCE_CFG)
    if kind in ("lightning", "hyper", "lcm") and (m := _STEPS.search(names)):
        profile = replace(profile, steps=max(1, int(m.group(1))))
    if kind == "hyper" and _CFG_WORD.search(names):
        profile = replace(profile, cfg_scale=5.0)
    return _with_overrides(profile, sidecar)


def _flux_profile(
    variant: str, declared: str | None, sidecar: dict[str, Any], names: str, t5_max_tokens: int | None, path
) -> Profile:
    """A Flux variant's defaults. A declared or sidecar kind only labels it (the kinds' samplers are not flow
    samplers); a step count in the name sets the steps."""
    if declared:
        kind, source = _check_kind(declared, "PICTALE_MODEL_KIND"), "declared"
    elif sidecar.get("kind") or sidecar.get("variant"):
        kind, source = _check_kind(str(sidecar.get("kind") or STANDARD), _sidecar_path(path).name), "sidecar"
    else:
        kind, source = STANDARD, "files" if path is not None else "name"
    profile = replace(_FLUX_DEFAULTS[variant], kind=kind, source=source)
    if m := _STEPS.search(names):
        profile = replace(profile, steps=max(1, int(m.group(1))))
    if t5_max_tokens is not None:
        profile = replace(profile, t5_tokens=min(t5_max_tokens, _FLUX_T5_LIMIT.get(variant, T5_TOKENS_MAX)))
    return profile


def _names(entry: ModelEntry) -> str:
    """What name detection reads: model name, title without its hash, and the file or folder name (or hub id);
    never the parent folders of a local path (a temp or home directory says nothing about the model)."""
    last = entry.filename if entry.source == "hub" else Path(entry.filename).name
    return " ".join((entry.model_name, entry.title.split(" [")[0], last)).lower()


def _kind_from_name(names: str) -> str | None:
    if "lcm" in names:
        return "lcm"
    if "turbo" in names:
        return "turbo"
    if "lightning" in names:
        return "lightning"
    # "hyper" alone is too common ("HyperRealism"); Hyper-SD names say hyper-sd or a step count.
    if _HYPER.search(names) or ("hyper" in names and _STEPS.search(names)):
        return "hyper"
    if _STEPS.search(names):
        return "lightning"  # a distilled "Nstep" model with no other hint: Euler, trailing, no CFG
    return None


def _check_kind(kind: str, where: str) -> str:
    value = kind.strip().lower()
    value = {"sd": STANDARD, "normal": STANDARD, "none": STANDARD, "hyper-sd": "hyper", "hypersd": "hyper"}.get(
        value, value
    )
    if value not in KINDS:
        log.warning("%s: unknown model kind %r (known: %s); treating it as standard", where, kind, ", ".join(KINDS))
        return STANDARD
    return value


def _sidecar_path(path: Path) -> Path:
    """`<stem>.pictale.json` beside a file, `<folder>.pictale.json` beside a folder."""
    stem = path.name if path.is_dir() else path.stem
    return path.parent / f"{stem}{SIDECAR_SUFFIX}"


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = _sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", sidecar, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring %s: not a JSON object", sidecar)
        return {}
    return data


def _with_overrides(profile: Profile, sidecar: dict[str, Any]) -> Profile:
    changes: dict[str, Any] = {}
    try:
        if sidecar.get("sampler"):
            changes["sampler"] = str(sidecar["sampler"])
        if sidecar.get("scheduler"):
            changes["scheduler"] = str(sidecar["scheduler"])
        if sidecar.get("steps") is not None:
            changes["steps"] = max(1, int(sidecar["steps"]))
        if sidecar.get("cfg_scale") is not None:
            changes["cfg_scale"] = float(sidecar["cfg_scale"])
        if sidecar.get("size") is not None:
            changes["size"] = int(sidecar["size"])
        if profile.variant is not None and sidecar.get("distilled_cfg_scale") is not None:
            changes["distilled_cfg_scale"] = float(sidecar["distilled_cfg_scale"])
        if profile.variant is not None and sidecar.get("t5_tokens") is not None:
            changes["t5_tokens"] = min(max(1, int(sidecar["t5_tokens"])), T5_TOKENS_MAX)
    except (TypeError, ValueError) as exc:
        log.warning("ignoring a bad value in a model sidecar: %s", exc)
        return profile
    return replace(profile, **changes)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lcm_scheduler(path: Path) -> bool:
    if not path.is_dir():
        return False
    scheduler = _read_json(path / "scheduler" / "scheduler_config.json").get("_class_name")
    index = _read_json(path / "model_index.json").get("scheduler")
    return scheduler == "LCMScheduler" or (isinstance(index, list) and "LCMScheduler" in index)


def _embedded_guidance(path: Path) -> bool:
    """An LCM-distilled UNet takes the guidance scale as an embedding (`time_cond_proj_dim`)."""
    return path.is_dir() and _read_json(path / "unet" / "config.json").get("time_cond_proj_dim") is not None


def declared_kind(settings: Settings, entry: ModelEntry) -> str | None:
    """`settings.model_kind` declares the start-up model (`settings.model`), or any model when none is named."""
    if not settings.model_kind:
        return None
    wanted = (settings.model or "").strip()
    if not wanted:
        return settings.model_kind
    if wanted.lower() == "tiny":
        return settings.model_kind if entry.source == "tiny" else None
    names = {entry.title, entry.model_name, entry.filename, Path(entry.filename).name, entry.title.split(" [")[0]}
    if wanted in names or Path(wanted).expanduser().absolute() == Path(entry.filename):
        return settings.model_kind
    return None


def profile_for(settings: Settings, entry: ModelEntry, variant: str | None = None) -> Profile:
    """The profile the server uses for `entry`, honouring `PICTALE_MODEL_KIND` for the start-up model and an
    explicitly set `t5_max_tokens` for Flux models (`variant`: a Flux model's, when the caller knows it)."""
    t5 = settings.t5_max_tokens if "t5_max_tokens" in settings.model_fields_set else None
    return model_profile(entry, declared_kind(settings, entry), variant=variant, t5_max_tokens=t5)


def service_profile(service: Any, entry: ModelEntry) -> Profile:
    """`profile_for` with what the running server knows: a loaded hub model's Flux variant comes from the engine."""
    return profile_for(service.settings, entry, model_variant(service, entry))


def profile_of_request(service: Any, model: str | None = None) -> tuple[Profile, ModelEntry | None]:
    """For any entry point: the profile of the model a request will run on (its `model`, else the configured
    checkpoint, else the loaded one) and that model's entry; ModelNotFound (404) for an unknown name."""
    wanted = model or service.options.get("sd_model_checkpoint")
    entry = service.catalog.find(str(wanted)) if wanted else service.current_model
    if entry is None:
        return default_profile(), None
    return service_profile(service, entry), entry


def default_profile(kind: str = STANDARD) -> Profile:
    """The defaults of a kind, detected from nothing: what a model without any hint gets."""
    return _DEFAULTS[_check_kind(kind, "kind")]


def default_size(profile: Profile, family: str | None) -> int:
    """Default image side: the profile's, else 1024 for SDXL, SD3 and FLUX.1 and 512 for the others."""
    family = FLUX if profile.variant is not None else family  # a hub model's family is known once it is loaded
    return profile.size or STANDARD_SIZES.get(family or "", 512)


def apply_profile(spec_fields: dict[str, Any], profile: Profile, explicit: set[str]) -> dict[str, Any]:
    """Fill sampler, scheduler, steps and cfg_scale (and width/height when the profile has a size, and a Flux
    model's distilled_cfg_scale) from the profile wherever the client left them unset (not in `explicit`);
    returns a new dict."""
    out = dict(spec_fields)
    for name in PROFILE_FIELDS:
        if name not in explicit:
            out[name] = getattr(profile, name)
    if profile.distilled_cfg_scale is not None and "distilled_cfg_scale" not in explicit:
        out["distilled_cfg_scale"] = profile.distilled_cfg_scale
    if profile.size is not None:
        for name in ("width", "height"):
            if name not in explicit:
                out[name] = profile.size
    return out
