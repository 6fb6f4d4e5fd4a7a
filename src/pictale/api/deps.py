"""Request-scoped helpers shared by the dialects."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import Request

from pictale.core.errors import JobCancelled
from pictale.jobs.queue import Job
from pictale.service.generation import GenerationService


def service(request: Request) -> GenerationService:
    return request.app.state.service


def owner(request: Request) -> str:
    """The caller's id (set by the auth dependency): whose avatars a prompt may call."""
    return request.state.principal.id


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the ASGI server sends http.disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_for_job(request: Request, job: Job) -> Any:
    """Await the job's result; a client that disconnects cancels its own queued or running job."""
    result = asyncio.wrap_future(job.future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not result.done():
            job.cancel()
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await gone
    if not result.done():
        raise JobCancelled("the client disconnected; the job was cancelled")
    return result.result()
