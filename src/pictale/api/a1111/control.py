"""A1111 `/sdapi/v1` routes that report or change shared state: progress, interrupt, skip, options.

Open mode (one local user) keeps A1111's global behaviour. With keys (or `--api-auth`), each caller sees and
stops only its own work: `progress` shows the caller's running job (or its last one), never another key's
preview or text, and `interrupt`/`skip` act on the caller's running job only. Requests of different keys
never share a merged batch (the service's batch key includes the owner), so stopping one never stops another.
Server options apply to every key: all may read them, only admins may change them (a non-admin key may post
back values that are already set, as clients that send the whole dict do).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool

from pictale.api.auth import require_auth
from pictale.api.deps import service
from pictale.core.errors import Forbidden
from pictale.jobs.queue import Job
from pictale.service.previews import request_previews

router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(require_auth)])


def _scoped(request: Request) -> bool:
    """True when the caller sees only its own jobs (auth is on); False in open mode."""
    return not request.app.state.auth.open_mode


def running_jobs(request: Request) -> list[Job]:
    """The generations running now that the caller may see and stop (merged ones included)."""
    svc = service(request)
    if not _scoped(request):
        job = svc.queue.current
        return [job] if job is not None and job.kind == "generate" else []
    me = request.state.principal.id
    return [j for j in svc.queue.running if j.finished is None and j.kind == "generate" and j.owner == me]


def last_job(request: Request) -> Job | None:
    """The caller's latest generation (anyone's in open mode), for the idle progress answer."""
    svc = service(request)
    if not _scoped(request):
        return svc.last_job
    me = request.state.principal.id
    mine = [j for j in svc.queue.jobs() if j.kind == "generate" and j.owner == me]
    return max(mine, key=lambda j: j.created, default=None)


@router.get("/progress")
async def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    running = running_jobs(request)
    if not running:
        last = last_job(request)
        p = last.progress if last else None
        state = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(last.created)) if last else "0",
            "job_no": p.batch_no if p else 0,
            "sampling_step": p.step if p else 0,
            "sampling_steps": p.total if p else 0,
        }
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    job = running[0]
    p = job.progress
    state = {
        "skipped": job.skipped,
        "interrupted": job.interrupted,
        "stopping_generation": False,
        "job": f"Batch {p.batch_no + 1} out of {p.batch_count}",
        "job_count": p.batch_count,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "job_no": p.batch_no,
        "sampling_step": p.step,
        "sampling_steps": p.total,
    }
    if not skip_current_image:
        request_previews(job)  # someone watches: the job makes live previews from now on
    return {
        "progress": p.fraction,
        "eta_relative": job.eta,
        "state": state,
        "current_image": None if skip_current_image else job.preview,
        "textinfo": None,
    }


@router.post("/interrupt")
async def interrupt(request: Request) -> dict[str, Any]:
    for job in running_jobs(request):
        job.interrupt()
    return {}


@router.post("/skip")
async def skip(request: Request) -> None:
    for job in running_jobs(request):
        job.skip()
    return None


@router.get("/options")
async def get_options(request: Request) -> dict[str, Any]:
    return dict(service(request).options)


@router.post("/options")
async def set_options(request: Request, body: dict[str, Any] = Body(default_factory=dict)) -> None:
    svc = service(request)
    if not request.state.principal.is_admin:
        changed = sorted(k for k, v in body.items() if svc.options.get(k, object()) != v)
        if changed:
            raise Forbidden(
                f"only admin keys change server options, which apply to every key (asked to change: "
                f"{', '.join(changed)}); send them per request in override_settings instead"
            )
        return None
    await run_in_threadpool(svc.set_options, body)
    return None
