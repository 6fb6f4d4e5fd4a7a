"""A1111 `/sdapi/v1` generation routes: parse the wire shape, call the service, reply (control: control.py)."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from pictale.api.a1111.schemas import Img2ImgRequest, PngInfoRequest, Txt2ImgRequest
from pictale.api.auth import require_auth
from pictale.api.deps import owner, service, wait_for_job
from pictale.core.images import image_bytes, open_checked
from pictale.core.types import GenerationSpec
from pictale.service.generation import GenerationService
from pictale.service.profiles import apply_profile, profile_of_request
from pictale.service.results import GenerationResult
from pictale.storage.infotext import parse_infotext, read_infotext

router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(require_auth)])


def _response(result: GenerationResult, parameters: dict[str, Any], send_images: bool) -> dict[str, Any]:
    images = [base64.b64encode(b).decode("ascii") for b in result.images] if send_images else []
    if parameters.get("distilled_cfg_scale") is None:  # the echo names the distilled guidance that ran (Flux)
        parameters = {**parameters, "distilled_cfg_scale": result.extra_params.get("Distilled CFG Scale")}
    return {"images": images, "parameters": parameters, "info": result.info_json()}


@router.post("/txt2img")
async def txt2img(request: Request, body: Txt2ImgRequest = Body(default_factory=Txt2ImgRequest)) -> dict[str, Any]:
    svc = service(request)
    spec = with_profile(svc, body.to_spec(svc.options), body.explicit())
    job = svc.submit(spec, owner=owner(request))
    result = await wait_for_job(request, job)
    _restore_overrides(request, body)
    return _response(result, body.filled(), body.send_images is not False)


@router.post("/img2img")
async def img2img(request: Request, body: Img2ImgRequest = Body(default_factory=Img2ImgRequest)) -> dict[str, Any]:
    svc = service(request)
    spec = with_profile(
        svc,
        body.to_spec(svc.options, max_pixels=svc.settings.max_image_pixels, max_images=svc.settings.max_upload_images),
        body.explicit(),
    )
    job = svc.submit(spec, owner=owner(request))
    result = await wait_for_job(request, job)
    _restore_overrides(request, body)
    return _response(result, body.filled(), body.send_images is not False)


_PROFILED = ("sampler", "scheduler", "steps", "cfg_scale", "distilled_cfg_scale", "width", "height")


def with_profile(svc: GenerationService, spec: GenerationSpec, explicit: set[str]) -> GenerationSpec:
    """Few-step models (LCM, turbo, lightning, hyper) and FLUX.1 get their own sampler, steps, CFG (and Flux its
    distilled guidance) where the client sent none; A1111's defaults (50 steps, Euler, CFG 7) stay for the others."""
    profile, _ = profile_of_request(svc, spec.model)
    if not profile.own_defaults:
        return spec
    fields = {name: getattr(spec, name) for name in _PROFILED}
    return replace(spec, **apply_profile(fields, profile, explicit))


def _restore_overrides(request: Request, body: Any) -> None:
    """`override_settings_restore_afterwards: false` makes the override the new setting, as in A1111; only
    for admins (server options apply to every key): for other keys the override acts on that request only."""
    svc, overrides = service(request), body.override_settings or {}
    if overrides and body.override_settings_restore_afterwards is False and request.state.principal.is_admin:
        kept = {k: v for k, v in overrides.items() if k != "sd_model_checkpoint"}
        svc.options.update(kept)
        if "sd_model_checkpoint" in overrides and svc.current_model is not None:
            svc.options["sd_model_checkpoint"] = svc.current_model.title
            svc.options["sd_checkpoint_hash"] = svc.current_model.sha256


@router.post("/png-info")
async def png_info(request: Request, body: PngInfoRequest) -> dict[str, Any]:
    if not body.image.strip():
        return {"info": "", "items": {}, "parameters": {}}
    raw = image_bytes(body.image, field="image")
    # the header is checked against the pixel limit; the pixels themselves are never decoded here
    open_checked(raw, field="image", max_pixels=service(request).settings.max_image_pixels)
    info, items = read_infotext(raw)
    return {"info": info or "", "items": items, "parameters": parse_infotext(info) if info else {}}
