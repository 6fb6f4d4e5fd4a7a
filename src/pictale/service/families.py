"""Model-family checks made before a job is queued: avatars the job's model family cannot apply, SD3 face/style
avatars whose IP-Adapter files are missing, and adapter files that do not fit the loaded model (the tiny demo's
beside a real model) get a 422 now, not a failed job later (the rules and messages are
`engine.family_support`, which imports no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pictale.core.errors import PictaleError
from pictale.core.types import GenerationSpec
from pictale.engine.families.flux.variant import flux_variant, sidecar_variant
from pictale.engine.families.support import check_avatars, check_ip_adapter_files


def job_family(service: Any, spec: GenerationSpec) -> str | None:
    """The family of the model `spec` will run on: its own `model`, else the configured checkpoint.

    Scanned entries know their family; a hub model learns it when loaded, so the loaded engine answers for
    it. None when nothing tells (the engine checks again when the job runs).
    """
    wanted = spec.model or service.options.get("sd_model_checkpoint")
    current = service.current_model  # None until an engine exists: asking never builds one
    entry = None
    if wanted:
        try:
            entry = service.catalog.find(wanted)
        except PictaleError:
            entry = None
    if entry is not None and entry.family:
        return entry.family
    if current is not None and (entry is None or entry.filename == current.filename):
        return getattr(service.engine, "family", None)
    return None


def check_job_family(service: Any, spec: GenerationSpec) -> None:
    """422 (UnsupportedFeature) when an avatar of `spec` cannot run on its model's family (e.g. a pose on SD3,
    two faces on SD3, or a face on SD3 without the SD3 IP-Adapter files)."""
    if not spec.avatars:
        return
    family = job_family(service, spec)
    check_avatars(spec.avatars, family, param="prompt")
    root = getattr(getattr(service, "settings", None), "ip_adapter_path", None)
    if root is not None:  # stand-in services without settings: the engine checks when the job runs
        check_ip_adapter_files(spec.avatars, family, root, param="prompt")
    if runs_on_loaded_model(service, spec):  # adapter files that do not fit the model: 422 now, not a crash
        check = getattr(service.engine, "check_adapter_fit", None)
        if check is not None:
            check(spec.avatars)


def runs_on_loaded_model(service: Any, spec: GenerationSpec) -> bool:
    """True when `spec` will run on the model loaded now (jobs on another model are checked when it loads)."""
    current = getattr(service, "current_model", None)
    if current is None:
        return False
    wanted = spec.model or service.options.get("sd_model_checkpoint")
    if not wanted:
        return True
    try:
        return service.catalog.find(wanted).filename == current.filename
    except PictaleError:
        return False


def job_variant(service: Any, spec: GenerationSpec) -> str | None:
    """The FLUX.1 variant ("schnell", "dev", "kontext") of the model `spec` will run on; None for other families
    or when nothing tells. The loaded engine answers for its model; another model's folder or file is read (no
    torch: `engine.families.flux.variant`)."""
    if job_family(service, spec) != "flux":
        return None
    if runs_on_loaded_model(service, spec):
        return getattr(service.engine, "flux_variant", None)
    wanted = spec.model or service.options.get("sd_model_checkpoint")
    try:
        entry = service.catalog.find(wanted) if wanted else None
    except PictaleError:
        return None
    if entry is None or entry.source == "hub":
        return None  # a hub model tells its pipeline class only when loaded
    path = Path(entry.filename)
    if path.is_dir():
        return flux_variant(path)
    # a single file: Kontext has dev's keys, so only its sidecar or its name tell (flux.md section 3)
    return sidecar_variant(path) or ("kontext" if "kontext" in path.name.lower() else None)
