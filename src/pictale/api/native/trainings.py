"""`/v1/trainings`: LoRA trainings from photos (issue 11). Thin routes over `service.trainings`.

A training is a job with the training's id: its events (`stage`, `step`, `sample`, `checkpoint`, `chosen`, then
`done`, `failed` or `cancelled`) come over `/v1/trainings/{id}/events` or `/v1/jobs/{id}/events`. A key sees only
its own trainings (another key's id is a 404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from pictale.api.auth import require_auth
from pictale.api.native.jobs import job_events
from pictale.core.errors import JobCancelled, PictaleError
from pictale.core.types import Principal
from pictale.jobs.queue import Job
from pictale.service.trainings import TrainingFields, TrainingService

router = APIRouter(prefix="/v1", tags=["trainings"])
Caller = Annotated[Principal, Depends(require_auth)]
Files = Annotated[list[UploadFile] | None, File()]
Text = Annotated[str | None, Form()]


def _trainings(request: Request) -> TrainingService:
    return request.app.state.trainings


def _base(request: Request) -> str:
    return str(request.base_url)


def _list(values: list[str] | None, sep: str) -> tuple[str, ...]:
    """Repeated form fields, or one field holding several (comma- or newline-separated)."""
    out: list[str] = []
    for value in values or ():
        out += [v.strip() for v in value.split(sep) if v.strip()]
    return tuple(out)


@router.post("/trainings", status_code=202)
async def create_training(
    request: Request,
    caller: Caller,
    name: Annotated[str, Form()],
    kind: Annotated[str, Form()],
    trigger: Text = None,
    base_model: Text = None,
    rank: Annotated[int | None, Form()] = None,
    steps: Annotated[int | None, Form()] = None,
    learning_rate: Annotated[float | None, Form()] = None,
    optimizer: Text = None,
    resolution: Annotated[int | None, Form()] = None,
    batch_size: Annotated[int | None, Form()] = None,
    checkpoint_every: Annotated[int | None, Form()] = None,
    seed: Annotated[int | None, Form()] = None,
    sample_prompts: Annotated[list[str] | None, Form()] = None,
    character: Text = None,
    face_avatars: Annotated[list[str] | None, Form()] = None,
    photos: Files = None,
    files: Files = None,
    archive: Annotated[UploadFile | None, File(alias="zip")] = None,
) -> JSONResponse:
    """Multipart: `photos` (files), or `zip`, or `face_avatars` (names); `name`, `kind` and optional settings."""
    fields = TrainingFields(
        name=name,
        kind=kind,
        trigger=trigger or None,
        base_model=base_model or None,
        rank=rank,
        steps=steps,
        learning_rate=learning_rate,
        optimizer=optimizer or None,
        resolution=resolution,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        seed=seed,
        sample_prompts=_list(sample_prompts, "\n"),
        character=character or None,
    )
    uploads = [(u.filename, u.file) for u in (*(photos or ()), *(files or ()))]
    zipped = (archive.filename, archive.file) if archive is not None else None
    training = await run_in_threadpool(
        _trainings(request).create, caller.id, fields, uploads, zipped, _list(face_avatars, ","), _base(request)
    )
    return JSONResponse(training, status_code=202, headers={"Location": f"/v1/trainings/{training['id']}"})


@router.get("/trainings")
async def list_trainings(request: Request, caller: Caller) -> dict[str, Any]:
    trainings = await run_in_threadpool(_trainings(request).list, caller.id, _base(request))
    return {"object": "list", "data": trainings}


@router.get("/trainings/{training_id}")
async def get_training(request: Request, caller: Caller, training_id: str) -> dict[str, Any]:
    return await run_in_threadpool(_trainings(request).get, caller.id, training_id, _base(request))


@router.delete("/trainings/{training_id}")
async def cancel_training(request: Request, caller: Caller, training_id: str) -> JSONResponse:
    """Cancel: 200 once it has stopped (no avatar registered), 202 while it is still stopping."""
    view, stopped = await run_in_threadpool(_trainings(request).cancel, caller.id, training_id, _base(request))
    return JSONResponse(view, status_code=200 if stopped else 202)


@router.post("/trainings/{training_id}/resume", status_code=202)
async def resume_training(request: Request, caller: Caller, training_id: str) -> JSONResponse:
    view = await run_in_threadpool(_trainings(request).resume, caller.id, training_id, _base(request))
    return JSONResponse(view, status_code=202)


@router.get("/trainings/{training_id}/samples/{step}/{index}")
async def sample_image(request: Request, caller: Caller, training_id: str, step: int, index: int) -> Response:
    data = await run_in_threadpool(_trainings(request).sample_image, caller.id, training_id, step, index)
    return Response(data, media_type="image/png")


def training_job(request: Request, caller: Caller, training_id: str) -> Job:
    """The caller's training's job (404 before any event is sent); one that ended before this server started
    stands in as a finished job that gives its final event."""
    trainings = _trainings(request)
    view = trainings.get(caller.id, training_id, _base(request))
    job = trainings.service.queue.get(training_id)
    if job is None or job.kind != "training":
        job = _ended_job(training_id, caller.id, view)
    return job


@router.get("/trainings/{training_id}/events", response_class=EventSourceResponse)
async def training_events(
    request: Request,
    job: Annotated[Job, Depends(training_job)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """The training's job events, as `/v1/jobs/{id}/events` gives them (`Last-Event-ID` resumes)."""
    async for event in job_events(request, job, False, last_event_id):
        yield event


def _ended_job(training_id: str, owner: str, view: dict) -> Job:
    """A finished job standing for a training this process has no job of (ended before a restart)."""
    job = Job(work=lambda job: None, kind="training", owner=owner, id=training_id)
    if view["state"] == "done":
        job._end(view)
    elif view["state"] == "failed":
        error = view.get("error") or {}
        exc = PictaleError(error.get("message") or "the training failed")
        exc.code = error.get("code") or "internal_error"
        job._end(exc)
    else:
        job._end(JobCancelled(f"the training is {view['state']}; POST /v1/trainings/{training_id}/resume goes on"))
    return job
