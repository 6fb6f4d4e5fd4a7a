"""`/v1/jobs`: pictale's own job API. Create (202 at once), read, list, follow (SSE), cancel; optional webhook.

Same queue, worker and cancel path as the A1111 and OpenAI routes (GenerationService.submit). A key sees only
its own jobs: another key's job id is a 404 everywhere, never a 403.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from pictale.api.auth import require_auth
from pictale.api.deps import service
from pictale.api.native.job_schemas import JobRequest
from pictale.api.native.job_views import is_settled, job_json, job_state
from pictale.api.native.webhooks import outbox
from pictale.core.errors import InvalidRequest, JobNotFound
from pictale.core.types import Principal
from pictale.jobs.events import TERMINAL, JobEvent
from pictale.jobs.queue import Job, JobState
from pictale.service.files import FileStore
from pictale.service.profiles import profile_of_request

router = APIRouter(prefix="/v1", tags=["jobs"])
Caller = Annotated[Principal, Depends(require_auth)]

JOB_KINDS = ("generate", "book", "training", "sweep")
"""What the job API shows: generations, books, trainings (their jobs have the book's or training's id) and
avatar weight sweeps."""
CANCEL_WAIT = 3.0
"""DELETE waits this long for a running job to stop before answering 202 (still stopping)."""
FOLLOW_POLL = 0.25
# The service validates with A1111's field names; this API names its own.
_PARAMS = {
    "hr_scale": "hires.scale",
    "hr_second_pass_steps": "hires.second_pass_steps",
    "hr_prompt": "hires.prompt",
    "hr_negative_prompt": "hires.negative_prompt",
    "hr_denoising_strength": "hires.denoising_strength",
    "hr_resize_x": "hires.resize_x",
    "CLIP_stop_at_last_layers": "clip_skip",
    "sd_model_checkpoint": "model",
}


def own_job(request: Request, job_id: str, caller: Caller) -> Job:
    """The caller's generation job, else 404 (other keys' jobs do not exist for it)."""
    job = service(request).queue.get(job_id)
    if job is None or job.kind not in JOB_KINDS or job.owner != caller.id:
        raise JobNotFound(f"no job with id {job_id!r}", param="job_id")
    return job


OwnJob = Annotated[Job, Depends(own_job)]


def _files(request: Request) -> FileStore:
    return request.app.state.files


def _base_url(request: Request) -> str:
    return str(request.base_url)


@router.post("/jobs", status_code=202)
def create_job(request: Request, caller: Caller, body: JobRequest) -> JSONResponse:
    """Queue a generation and answer at once with the job (state "queued"); follow it by GET, SSE or webhook."""
    svc = service(request)
    profile, entry = profile_of_request(svc, body.model)
    spec = body.to_spec(
        profile,
        family=entry.family if entry else None,
        options=svc.options,
        max_pixels=svc.settings.max_image_pixels,
        max_images=svc.settings.max_upload_images,
    )
    if body.callback_url:
        outbox(request).check(body.callback_url)  # refused before anything is queued
    base_url, files = _base_url(request), _files(request)
    meta = {
        "api": "jobs",
        "response_format": body.response_format,
        "previews": body.previews,
        "callback_url": body.callback_url,
        "base_url": base_url,
        "profile": profile.kind,
    }
    try:
        job = svc.submit(spec, owner=caller.id, session=body.session, meta=meta)
    except InvalidRequest as exc:
        exc.param = _PARAMS.get(exc.param or "", exc.param)
        raise
    accepted = _accepted(job, files, base_url)
    if body.callback_url:
        outbox(request).watch(job, caller.id, body.callback_url, accepted, lambda: job_json(job, files, base_url))
    return JSONResponse(accepted, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


def _accepted(job: Job, files: FileStore, base_url: str) -> dict[str, Any]:
    """The job as it was accepted (queued), even if the worker has already picked it up: GET shows it live."""
    body = job_json(job, files, base_url, with_result=False)
    if body["state"] in (JobState.RUNNING, JobState.DONE, JobState.FAILED):
        body.update(state=JobState.QUEUED.value, started=None, finished=None, eta=None, error=None)
        body["progress"] = {"step": 0, "total": 0, "fraction": 0.0}
    body["result"] = None
    return body


@router.get("/jobs")
def list_jobs(
    request: Request,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    state: Annotated[JobState | None, Query()] = None,
) -> dict[str, Any]:
    """The caller's recent jobs, newest first (without `result`: GET a job for its images)."""
    jobs = [j for j in service(request).queue.jobs() if j.kind in JOB_KINDS and j.owner == caller.id]
    if state is not None:
        jobs = [j for j in jobs if job_state(j) == state.value]
    jobs.sort(key=lambda j: j.created, reverse=True)
    files, base = _files(request), _base_url(request)
    return {"object": "list", "data": [job_json(j, files, base, with_result=False) for j in jobs[:limit]]}


@router.get("/jobs/{job_id}")
def get_job(request: Request, job: OwnJob) -> dict[str, Any]:
    return job_json(job, _files(request), _base_url(request))


@router.delete("/jobs/{job_id}")
async def cancel_job(request: Request, job: OwnJob) -> JSONResponse:
    """Cancel: a queued job never runs, a running one stops within a step. 200 with the job once it has
    stopped; 202 (state still "running") if it has not within a few seconds. Finished jobs are left as they are."""
    if not is_settled(job):
        job.meta.setdefault("cancel_requested_at", time.time())
        job.meta.setdefault("cancel_requested_step", job.progress.step)
        job.cancel()
        deadline = time.monotonic() + CANCEL_WAIT
        while not is_settled(job) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    body = await run_in_threadpool(job_json, job, _files(request), _base_url(request))
    return JSONResponse(body, status_code=200 if is_settled(job) else 202)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    request: Request,
    job: OwnJob,
    cancel_on_disconnect: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: the job's history, then live events, until done, failed or cancelled.

    Resume with `Last-Event-ID` (events carry their sequence number as id). `cancel_on_disconnect=true`
    cancels the job when this stream is dropped before the end (a real-time client that went away)."""
    start = int(last_event_id) + 1 if last_event_id and last_event_id.strip().isdigit() else 0
    files, base = _files(request), _base_url(request)
    ended = False
    try:
        async for event in _follow(job, start):
            yield await _sse(event, job, files, base)
            if event.type in TERMINAL:
                ended = True
                return
    finally:
        if cancel_on_disconnect and not ended and not is_settled(job):
            job.cancel()


async def _follow(job: Job, start: int) -> AsyncIterator[JobEvent]:
    """The job's event log from `start`, replayed then followed live (like EventLog.stream), plus a
    `cancelled` event as soon as a queued job is cancelled (the queue logs it only when it reaches the job)."""
    i = start
    while True:
        events = job.events.snapshot()
        for event in events[i:]:
            yield event
            if event.type in TERMINAL:
                return
        i = max(i, len(events))
        if job.events.closed:
            return
        if job.state is JobState.QUEUED and job.cancelled:
            yield JobEvent(i, "cancelled", {"reason": "cancelled before it started"})
            return
        await asyncio.to_thread(job.events.wait, i, FOLLOW_POLL)


async def _sse(event: JobEvent, job: Job, files: FileStore, base_url: str) -> ServerSentEvent:
    data: dict[str, Any] = {"id": job.id, "seq": event.seq, "at": event.at}
    if event.type == "step":
        data.update({k: v for k, v in event.data.items() if k != "preview"})
        if job.meta.get("previews", True) and event.data.get("preview"):
            data["preview"] = event.data["preview"]
    elif event.type in ("done", "failed"):
        view = await run_in_threadpool(job_json, job, files, base_url)
        data.update(state=view["state"], result=view["result"], error=view["error"])
    else:
        data.update(event.data)
    return ServerSentEvent(event=event.type, id=str(event.seq), data=data)
