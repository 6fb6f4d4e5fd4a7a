"""A1111 `/sdapi/v1` read-only lists: same shapes as A1111, empty where pictale has no such feature."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from safetensors import safe_open

from pictale.api.a1111.schemas import LATENT_UPSCALE_MODES, PIXEL_UPSCALERS
from pictale.api.auth import require_auth
from pictale.api.deps import owner, service
from pictale.core.samplers import SAMPLERS_API, SCHEDULERS_API
from pictale.service.avatars import a1111_embeddings, a1111_lora_avatars

router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(require_auth)])


@router.get("/sd-models")
async def sd_models(request: Request) -> list[dict[str, Any]]:
    return [
        {
            "title": e.title,
            "model_name": e.model_name,
            "hash": e.short_hash,
            "sha256": e.sha256,
            "filename": e.filename,
            "config": None,
        }
        for e in service(request).catalog.entries
    ]


@router.post("/refresh-checkpoints")
async def refresh_checkpoints(request: Request) -> None:
    await run_in_threadpool(service(request).catalog.refresh)
    return None


@router.get("/samplers")
async def samplers() -> list[dict[str, Any]]:
    return SAMPLERS_API


@router.get("/schedulers")
async def schedulers() -> list[dict[str, Any]]:
    return SCHEDULERS_API


@router.get("/upscalers")
async def upscalers() -> list[dict[str, Any]]:
    def item(name: str) -> dict[str, Any]:
        return {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}

    return [item(name) for name in PIXEL_UPSCALERS]


@router.get("/latent-upscale-modes")
async def latent_upscale_modes() -> list[dict[str, str]]:
    return [{"name": name} for name in LATENT_UPSCALE_MODES]


@router.get("/sd-vae")
async def sd_vae() -> list[dict[str, str]]:
    return []


@router.get("/hypernetworks")
async def hypernetworks() -> list[dict[str, str]]:
    return []


@router.get("/face-restorers")
async def face_restorers() -> list[dict[str, str]]:
    return []


@router.get("/realesrgan-models")
async def realesrgan_models() -> list[dict[str, Any]]:
    return []


@router.get("/prompt-styles")
async def prompt_styles(request: Request) -> list[dict[str, str]]:
    return service(request).styles.all()


@router.get("/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    """The caller's embedding avatars, keyed by the token that applies them in a prompt."""
    svc = service(request)
    family = getattr(svc.engine, "family", None) if svc.current_model is not None else None
    return await run_in_threadpool(a1111_embeddings, svc.avatars, owner(request), family)


@router.get("/scripts")
async def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/script-info")
async def script_info() -> list[dict[str, Any]]:
    return []


@router.get("/extensions")
async def extensions() -> list[dict[str, Any]]:
    return []


@router.get("/loras")
async def loras(request: Request) -> list[dict[str, Any]]:
    """The caller's LoRA avatars, then the `.safetensors` files of the Lora dir (an avatar wins a shared name)."""
    svc = service(request)
    avatars = await run_in_threadpool(a1111_lora_avatars, svc.avatars, owner(request))
    names = {a["name"] for a in avatars}
    files = await run_in_threadpool(_scan_loras, svc.loras_dir)
    if not request.state.principal.is_admin:  # the server's file system is for admins (as cmd-flags)
        files = [f | {"path": os.path.relpath(f["path"], svc.loras_dir)} for f in files]
    return avatars + [f for f in files if f["name"] not in names]


@router.post("/refresh-loras")
async def refresh_loras(request: Request) -> None:
    # LoRAs are listed from disk on every call, so there is nothing cached to refresh.
    return None


SERVER_PATHS = ("data_dir", "models_dir", "ckpt_dir", "lora_dir", "ckpt")
"""cmd-flags entries that show the server's file system: null for non-admin keys."""


@router.get("/cmd-flags")
async def cmd_flags(request: Request) -> dict[str, Any]:
    s = service(request).settings
    flags = {
        "api": True,
        "nowebui": True,
        "listen": s.listen,
        "server_name": s.host,
        "port": s.port,
        "api_auth": None,  # never echoed: credentials stay out of responses
        "cors_allow_origins": s.cors_allow_origins,
        "cors_allow_origins_regex": s.cors_allow_origins_regex,
        "data_dir": str(s.data_dir),
        "models_dir": str(s.models_path),
        "ckpt_dir": str(s.checkpoints_path),
        "lora_dir": str(s.loras_path),
        "ckpt": s.model,
        "device": s.device,
    }
    if not request.state.principal.is_admin:
        flags.update(dict.fromkeys(SERVER_PATHS))
    return flags


@router.get("/memory")
async def memory(request: Request) -> dict[str, Any]:
    svc = service(request)
    ram = _ram()
    cuda = svc.engine.memory() if svc.current_model is not None else {"error": "no model loaded"}
    return {"ram": ram, "cuda": cuda}


def _ram() -> dict[str, int]:
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    except OSError:
        return {"free": 0, "used": 0, "total": 0}
    total = info.get("MemTotal", 0)
    free = info.get("MemAvailable", info.get("MemFree", 0))
    return {"free": free, "used": total - free, "total": total}


def _scan_loras(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not directory.is_dir():
        return out
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            if not name.endswith(".safetensors"):
                continue
            path = Path(root) / name
            meta = _safetensors_metadata(path)
            out.append(
                {
                    "name": path.stem,
                    "alias": meta.get("ss_output_name", path.stem),
                    "path": str(path),
                    "metadata": meta,
                }
            )
    return out


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    """Only the header's `__metadata__` (A1111 returns it); no tensor is read, nothing is unpickled."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return dict(fh.metadata() or {})
    except Exception:  # a broken file is listed with empty metadata, as A1111 does
        return {}
