"""`/v1/story/imagine` (a picture of the chat so far) and `/v1/books` (picture books as jobs). Thin routes.

A book's progress is followed with the job API under the book's id (`GET /v1/jobs/{id}`, `/events`); a
key sees only its own books (another key's book id is a 404).
"""

from __future__ import annotations

import base64
import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pictale.api.auth import require_auth
from pictale.api.deps import service, wait_for_job
from pictale.api.native.story_schemas import BookRequest, ChooseRequest, ImagineRequest, RegenerateRequest
from pictale.core.errors import InvalidRequest
from pictale.core.types import Principal
from pictale.service.profiles import profile_of_request
from pictale.story.books import BookRunner
from pictale.story.imagine import plan_imagine

router = APIRouter(prefix="/v1", tags=["stories"])
Caller = Annotated[Principal, Depends(require_auth)]


def _books(request: Request) -> BookRunner:
    return request.app.state.books


def _profile(svc: Any, model: str | None) -> tuple[Any, str | None]:
    """The defaults of the model a request runs on (its profile) and that model's family."""
    profile, entry = profile_of_request(svc, model)
    return profile, entry.family if entry is not None else None


def _base(request: Request) -> str:
    return str(request.base_url)


@router.post("/story/imagine")
async def imagine(request: Request, caller: Caller, body: ImagineRequest) -> dict[str, Any]:
    svc = service(request)
    character = None
    if body.character:
        character = svc.characters.get(caller.id, body.character) if svc.characters is not None else None
        if character is None:
            raise InvalidRequest(f"unknown character {body.character!r}", param="character")
    base = body.base_spec(*_profile(svc, body.model), limits=svc.settings)
    svc.normalize(base)  # steps, size, seed: a 4xx before the prompt is written
    messages = [m.model_dump() for m in body.messages]
    plan = await run_in_threadpool(
        plan_imagine, messages, body.mode, character, request.app.state.llm(), context=body.context, base=base
    )
    job = svc.submit(plan.spec, owner=caller.id, session=body.session, meta={"imagine": body.mode})
    result = await wait_for_job(request, job)
    if body.response_format == "url":
        image: dict[str, Any] = {
            "url": f"{_base(request).rstrip('/')}/v1/files/{request.app.state.files.put(result.images[0])}"
        }
    else:
        image = {"b64_json": base64.b64encode(result.images[0]).decode("ascii")}
    image["revised_prompt"] = plan.spec.prompt
    return {
        "created": int(time.time()),
        "data": [image],
        "prompt": plan.spec.prompt,
        "scene": plan.scene.prompt,
        "negative_prompt": result.negative_prompts[0],
        "prompt_source": plan.scene.source,
        "llm_error": plan.scene.error,
        "mode": body.mode,
        "character": plan.character,
        "seed": result.seeds[0],
        "width": plan.spec.width,
        "height": plan.spec.height,
        "infotext": result.infotexts[0],
    }


@router.post("/books", status_code=202)
async def create_book(request: Request, caller: Caller, body: BookRequest) -> JSONResponse:
    req = body.to_request(*_profile(service(request), body.model), limits=service(request).settings)
    book = await run_in_threadpool(_books(request).create, caller.id, req, _base(request))
    return JSONResponse(book, status_code=202)


@router.get("/books")
async def list_books(request: Request, caller: Caller) -> dict[str, Any]:
    books = await run_in_threadpool(_books(request).list, caller.id, _base(request))
    return {"object": "list", "data": books}


@router.get("/books/{book_id}")
async def get_book(request: Request, caller: Caller, book_id: str) -> dict[str, Any]:
    return await run_in_threadpool(_books(request).get, caller.id, book_id, _base(request))


@router.delete("/books/{book_id}")
async def delete_book(request: Request, caller: Caller, book_id: str) -> dict[str, Any]:
    await run_in_threadpool(_books(request).delete, caller.id, book_id)
    return {"id": book_id, "object": "book", "deleted": True}


@router.post("/books/{book_id}/pages/{number}/regenerate", status_code=202)
async def regenerate_page(
    request: Request, caller: Caller, book_id: str, number: int, body: RegenerateRequest | None = None
) -> JSONResponse:
    body = body or RegenerateRequest()
    book = await run_in_threadpool(
        partial(_books(request).regenerate, seed=body.seed, prompt=body.prompt, base_url=_base(request)),
        caller.id,
        book_id,
        number,
    )
    return JSONResponse(book, status_code=202)


@router.post("/books/{book_id}/pages/{number}/choose")
async def choose_candidate(
    request: Request, caller: Caller, book_id: str, number: int, body: ChooseRequest
) -> dict[str, Any]:
    """Show another of the page's candidates (`{"candidate": INDEX}`); the page says `chosen_by: "user"`."""
    return await run_in_threadpool(_books(request).choose, caller.id, book_id, number, body.candidate, _base(request))


@router.post("/books/{book_id}/resume", status_code=202)
async def resume_book(request: Request, caller: Caller, book_id: str) -> JSONResponse:
    book = await run_in_threadpool(_books(request).resume, caller.id, book_id, _base(request))
    return JSONResponse(book, status_code=202)


@router.get("/books/{book_id}/pages/{number}/image")
async def page_image(request: Request, caller: Caller, book_id: str, number: int) -> Response:
    data = await run_in_threadpool(_books(request).image, caller.id, book_id, number)
    return Response(data, media_type="image/png")


@router.get("/books/{book_id}/pages/{number}/candidates/{index}")
async def candidate_image(request: Request, caller: Caller, book_id: str, number: int, index: int) -> Response:
    data = await run_in_threadpool(_books(request).image, caller.id, book_id, number, index)
    return Response(data, media_type="image/png")


@router.get("/books/{book_id}/export.{fmt}")
async def export_book(
    request: Request, caller: Caller, book_id: str, fmt: str, scores: Annotated[bool, Query()] = False
) -> Response:
    data = await run_in_threadpool(_books(request).export, caller.id, book_id, fmt, scores=scores)
    media = "application/pdf" if fmt == "pdf" else "text/html; charset=utf-8"
    name = f"book-{book_id[:8]}.{fmt}"
    return Response(data, media_type=media, headers={"Content-Disposition": f'inline; filename="{name}"'})
