"""OpenAI images dialect: `/v1/images/generations`, `/v1/images/edits`, `/v1/models`. Parse, submit, reply."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pictale.api.auth import require_auth
from pictale.api.body import content_type, is_json_type
from pictale.api.deps import owner, service, wait_for_job
from pictale.api.openai.schemas import (
    OUTPUT_FORMATS,
    Context,
    Delivery,
    EditRequest,
    ImagesRequest,
    find_checkpoint,
    interleave,
    one_spec_per_job,
    revised_prompt,
)
from pictale.api.openai.stream import image_events
from pictale.core.errors import InvalidImage, InvalidRequest, ModelNotFound, UnsupportedMediaType
from pictale.core.types import GenerationSpec, ModelEntry
from pictale.jobs.queue import Job
from pictale.service.files import sniff
from pictale.service.flux import model_facts
from pictale.service.generation import GenerationService
from pictale.service.profiles import service_profile
from pictale.service.results import GenerationResult
from pictale.storage.infotext import encode_image

router = APIRouter(prefix="/v1", dependencies=[Depends(require_auth)])

IMAGE_FIELD = re.compile(r"^images?(\[\d*\])?$")
"""`image`, `image[]` (Open WebUI, the openai package), `image[0]`, `images`: every way clients name them."""
MAX_IMAGE_BYTES = 50 * 1024 * 1024
"""OpenAI's own limit for one input image."""
Upload = tuple[str, bytes | str]


def _json_body_doc(model: type[ImagesRequest]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def json_object(request: Request) -> dict[str, Any]:
    """The JSON body as a dict (empty body: {}), with messages that say what is wrong with it."""
    raw = await request.body()
    if not raw.strip():
        return {}
    ctype = content_type(request)
    if ctype and not is_json_type(ctype):
        raise UnsupportedMediaType(
            f"Unsupported Content-Type {ctype!r}: send a JSON object with Content-Type: application/json.",
            param="body",
        )
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InvalidRequest("We could not parse the JSON body of your request (nested too deeply).") from None
    except ValueError as exc:
        if not ctype:  # no Content-Type and not JSON: say what this route reads
            raise UnsupportedMediaType(
                "The body is not JSON: send a JSON object with Content-Type: application/json.", param="body"
            ) from None
        raise InvalidRequest(f"We could not parse the JSON body of your request ({exc}).") from None
    if not isinstance(data, dict):
        raise InvalidRequest('The request body must be a JSON object, e.g. {"prompt": "a cat"}.')
    return data


def context(svc: GenerationService) -> Context:
    try:
        clip_skip = int(svc.options.get("CLIP_stop_at_last_layers", 1))
    except (TypeError, ValueError):
        clip_skip = 1
    models = svc.catalog.entries
    # the configured checkpoint, not the loaded one: a per-request override may still be loaded
    configured = find_checkpoint(models, str(svc.options.get("sd_model_checkpoint") or "")) or svc.current_model
    return Context(
        svc.settings, models, configured, clip_skip, partial(service_profile, svc), svc.catalog.refuse_unloadable
    )


@router.post("/images/generations", openapi_extra=_json_body_doc(ImagesRequest))
async def generations(request: Request) -> Any:
    body = ImagesRequest.parse(await json_object(request))
    svc = service(request)
    ctx = context(svc)
    spec = body.to_spec(ctx)
    return await _respond(request, svc, [spec], body.delivery(ctx), "image_generation")


@router.post("/images/edits")
async def edits(request: Request) -> Any:
    """Multipart: `image` (or several `image[]` / repeated `image`), optional `mask`, the other fields as text.
    A JSON body with base64 or data-URL `image` / `images` / `mask` works too."""
    fields, images, mask = await read_edit_request(request)
    body = EditRequest.parse(fields)
    svc = service(request)
    ctx = context(svc)
    spec = await run_in_threadpool(body.to_spec, ctx, images, mask)
    return await _respond(request, svc, one_spec_per_job(spec), body.delivery(ctx), "image_edit")


def _submit_all(request: Request, svc: GenerationService, specs: list[GenerationSpec], meta: dict | None) -> list[Job]:
    jobs: list[Job] = []
    try:
        for spec in specs:
            jobs.append(svc.submit(spec, owner=owner(request), meta=meta))
    except BaseException:
        for job in jobs:
            job.cancel()
        raise
    return jobs


async def _respond(
    request: Request, svc: GenerationService, specs: list[GenerationSpec], delivery: Delivery, prefix: str
) -> Any:
    meta = {"previews": True} if delivery.stream and delivery.partial_images else None
    jobs = _submit_all(request, svc, specs, meta)
    spec = specs[0]
    if delivery.stream:
        fmt = delivery.output_format or OUTPUT_FORMATS.get(str(svc.options.get("samples_format")).lower(), "png")
        events = image_events(
            jobs,
            prefix=prefix,
            delivery=delivery,
            size=_size_that_runs(svc, spec),
            output_format=fmt,
            finish=lambda results: interleave([encode_outputs(r, delivery) for r in results]),
        )
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        results = [await wait_for_job(request, job) for job in jobs]
    finally:
        for job in jobs:
            if not job.future.done():
                job.cancel()
    outputs = interleave([await run_in_threadpool(encode_outputs, r, delivery) for r in results])
    # The words the model read: characters expanded (the result's spec), avatar and LoRA tokens removed.
    expanded = results[0].spec.prompt if results else spec.prompt
    revised = revised_prompt(expanded) or (expanded if expanded != spec.prompt else None)
    data = []
    for blob in outputs:
        if delivery.response_format == "url":
            token = await run_in_threadpool(request.app.state.files.put, blob)
            item: dict[str, str] = {"url": str(request.url_for("get_file", token=token))}
        else:
            item = {"b64_json": base64.b64encode(blob).decode("ascii")}
        if revised is not None:
            item["revised_prompt"] = revised
        data.append(item)
    return {"created": int(time.time()), "data": data}


def _size_that_runs(svc: GenerationService, spec: GenerationSpec) -> str:
    """The size the service runs (floored: to 16 on FLUX.1), as the stream's events report it."""
    ran = svc.normalize(spec)
    return f"{ran.width}x{ran.height}"


def encode_outputs(result: GenerationResult, delivery: Delivery) -> list[bytes]:
    """The images in the asked `output_format` (re-encoded only when it differs), infotext kept."""
    fmt = delivery.output_format
    if fmt is None:
        return list(result.images)
    out = []
    for data, img, text in zip(result.images, result.pixels(), result.infotexts, strict=False):
        if sniff(data) == fmt and delivery.output_compression is None:
            out.append(data)
        else:
            quality = 80 if delivery.output_compression is None else delivery.output_compression
            out.append(encode_image(img, text, fmt, quality=quality))
    return out


# -- the edits body ------------------------------------------------------------------------------------
async def read_edit_request(request: Request) -> tuple[dict[str, Any], list[Upload], Upload | None]:
    """(text fields, images, mask) from a multipart form or a JSON body; images are bytes or base64."""
    if is_json_type(content_type(request)):
        return _json_parts(await json_object(request))
    limit = request.app.state.settings.max_upload_images
    try:
        async with request.form(max_files=limit + 2, max_fields=1000) as form:
            return await _form_parts(form)
    except StarletteHTTPException as exc:
        raise InvalidRequest(f"the multipart form could not be read: {exc.detail}") from None


async def _form_parts(form: FormData) -> tuple[dict[str, Any], list[Upload], Upload | None]:
    fields: dict[str, Any] = {}
    images: list[bytes | str] = []
    mask: Upload | None = None
    for key, value in form.multi_items():
        name = key.strip()
        if IMAGE_FIELD.match(name):
            images.append(await _read(value, "image"))
        elif name == "mask":
            mask = ("mask", await _read(value, "mask"))
        elif isinstance(value, str):
            fields[name] = value
    return fields, _named(images), mask


def _json_parts(body: dict[str, Any]) -> tuple[dict[str, Any], list[Upload], Upload | None]:
    def url(item: Any) -> Any:
        return item.get("image_url") if isinstance(item, dict) else item

    found: list[Any] = []
    for key in ("image", "images"):
        value = body.get(key)
        found += value if isinstance(value, list) else [value] if value else []
    images = [url(item) for item in found]
    if not all(isinstance(item, str) for item in images):
        raise InvalidImage("Invalid 'image': expected base64 or data-URL strings.", param="image")
    mask = url(body.get("mask")) if body.get("mask") else None
    if mask is not None and not isinstance(mask, str):
        raise InvalidImage("Invalid 'mask': expected a base64 or data-URL string.", param="mask")
    fields = {k: v for k, v in body.items() if k not in ("image", "images", "mask")}
    return fields, _named(images), ("mask", mask) if mask else None


def _named(images: list[bytes | str]) -> list[Upload]:
    if len(images) == 1:
        return [("image", images[0])]
    return [(f"image[{i}]", img) for i, img in enumerate(images)]


async def _read(value: UploadFile | str, field: str) -> bytes | str:
    if isinstance(value, str):
        return value  # a text part: base64, as some clients send
    data = await value.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImage(
            f"Invalid '{field}': {value.filename or 'the file'} is larger than {MAX_IMAGE_BYTES // 2**20} MB.",
            param=field,
        )
    return data


# -- models --------------------------------------------------------------------------------------------
def _model_json(svc: GenerationService, entry: ModelEntry) -> dict[str, Any]:
    """OpenAI's model object, then pictale's: family, FLUX.1 variant and licence, and the model's defaults."""
    try:
        created = int(os.stat(entry.filename).st_mtime)
    except OSError:
        created = 0
    out = {"id": entry.model_name, "object": "model", "created": created, "owned_by": "pictale"}
    return {**out, **model_facts(svc, entry), "profile": service_profile(svc, entry).to_json()}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The checkpoints `model` can name (ids are model names; titles and file names work in requests too)."""
    seen: set[str] = set()
    data = []
    svc = service(request)
    for entry in svc.catalog.entries:
        if entry.model_name not in seen:
            seen.add(entry.model_name)
            data.append(_model_json(svc, entry))
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    svc = service(request)
    entry = find_checkpoint(svc.catalog.entries, model_id)
    if entry is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return _model_json(svc, entry)
