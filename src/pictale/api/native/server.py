"""`/v1/server` (no auth): what a client shows before signing in; `/v1/me`: who the caller is.

The web UI reads both on load: whether to ask for an API key, the start-up notes (the red banner of the tiny
demo model) and whether to show the Keys page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from pictale import __version__
from pictale.api.auth import require_admin, require_auth
from pictale.api.deps import service
from pictale.core.errors import Forbidden
from pictale.core.types import Principal
from pictale.engine.demo.layout import is_demo
from pictale.service.metrics import metrics as service_metrics
from pictale.service.speed import speed_info

router = APIRouter(prefix="/v1", tags=["server"])
Caller = Annotated[Principal, Depends(require_auth)]


@router.get("/server")
def server_info(request: Request) -> dict[str, Any]:
    """The version, whether requests need credentials, the loaded model (`demo`: the tiny random-weight demo),
    the start-up notes and the speed modes in effect (`speed`: compiled, compile_seconds, compile_sizes, low_vram,
    notes)."""
    svc = service(request)
    entry = svc.current_model
    return {
        "object": "server",
        "version": __version__,
        "auth_required": request.app.state.auth.enabled,
        "model": entry.title if entry is not None else None,
        "demo": is_demo(entry),
        "notes": list(svc.startup_notes),
        "speed": speed_info(svc),
    }


@router.get("/me")
def me(caller: Caller) -> dict[str, Any]:
    """The caller: `{"object": "principal", "id", "name", "admin"}`; 401 without valid credentials."""
    return {"object": "principal", "id": caller.id, "name": caller.name, "admin": caller.is_admin}


@router.get("/metrics")
def metrics(request: Request) -> dict[str, Any]:
    """The queue and each worker (the local engine, or each Ray replica): jobs run, checkpoint and adapter loads
    (`adapter_loads`: "lora:DIGEST", "face:DIGEST", ...), the avatar sets routed to it. Admins only: it counts
    every key's work."""
    try:
        require_admin(request)
    except Forbidden:
        raise Forbidden("only admin API keys can read the metrics") from None
    return service_metrics(service(request))
