"""The job object of pictale's job API (`GET /v1/jobs/{id}`, SSE `done` events, webhooks), built from a Job.

Image links are made once, when a result is first served, and kept on `job.meta`; the absolute URL is built
from whichever base URL asks (the request's, or the creating request's for webhooks).
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from pictale.core.errors import PictaleError
from pictale.jobs.queue import Job, JobState
from pictale.service.files import FileStore
from pictale.service.results import GenerationResult

_links_lock = threading.Lock()
TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


def job_state(job: Job) -> str:
    """The queue's state, except that a cancelled queued job is already "cancelled": it will never run."""
    if job.state is JobState.QUEUED and job.cancelled:
        return JobState.CANCELLED.value
    return job.state.value


def is_settled(job: Job) -> bool:
    """True once the job will do no more work (finished, or cancelled before it started)."""
    return job_state(job) in TERMINAL_STATES


def job_json(job: Job, files: FileStore, base_url: str, *, with_result: bool = True) -> dict[str, Any]:
    """The job object; `with_result=False` (lists) leaves out `result`, so no image links are made."""
    state = job_state(job)
    p = job.progress
    if state == JobState.DONE:
        fraction = 1.0
    elif state == JobState.QUEUED:
        fraction = 0.0
    else:
        fraction = round(p.fraction, 4)
    finished = job.finished or (job.meta.get("cancel_requested_at") if state == JobState.CANCELLED else None)
    out: dict[str, Any] = {
        "id": job.id,
        "object": "job",
        "state": state,
        "created": job.created,
        "started": job.started,
        "finished": finished,
        "progress": {"step": p.step, "total": p.total, "fraction": fraction},
        "eta": round(job.eta, 3) if state == JobState.RUNNING else (None if state == JobState.QUEUED else 0.0),
        "session": job.session,
        "response_format": job.meta.get("response_format", "url"),
    }
    if with_result:
        out["result"] = result_json(job, files, base_url) if state == JobState.DONE else None
    out["error"] = error_json(job) if state == JobState.FAILED else None
    return out


def result_json(job: Job, files: FileStore, base_url: str) -> dict[str, Any] | None:
    """`{images: [{url | b64_json, seed, infotext}], info}` of a finished generation."""
    if not job.future.done() or job.future.exception() is not None:
        return None
    result = job.future.result()
    view = getattr(result, "job_view", None)
    if callable(view):  # work whose result shows itself, with links for this reader (an avatar sweep)
        return view(files, base_url)
    if isinstance(result, dict):  # work with its own result object (a book's view)
        return result
    if not isinstance(result, GenerationResult):
        return None
    b64 = job.meta.get("response_format") == "b64_json"
    links = None if b64 else _links(job, result, files, base_url)
    images = []
    for i, data in enumerate(result.images):
        image: dict[str, Any] = (
            {"b64_json": base64.b64encode(data).decode("ascii")} if b64 else {"url": links[i] if links else None}
        )
        image["seed"] = result.seeds[i] if i < len(result.seeds) else None
        image["infotext"] = result.infotexts[i] if i < len(result.infotexts) else None
        images.append(image)
    return {"images": images, "info": result.info(), "interrupted": result.interrupted}


def _links(job: Job, result: GenerationResult, files: FileStore, base_url: str) -> list[str]:
    with _links_lock:
        tokens = job.meta.get("file_tokens")
        # Links expire (file TTL); a result read later than that gets fresh ones.
        if tokens is None or any(files.get(token) is None for token in tokens):
            tokens = [files.put(data) for data in result.images]
            job.meta["file_tokens"] = tokens
            job.meta["files_created"] = time.time()
    root = base_url.rstrip("/")
    return [f"{root}/v1/files/{token}" for token in tokens]


def error_json(job: Job) -> dict[str, Any] | None:
    """`{message, type, code, param}` of a failed job, in the shape of pictale's `/v1` errors."""
    if not job.future.done():
        return None
    exc = job.future.exception()
    if exc is None:
        return None
    if isinstance(exc, PictaleError):
        kind = "invalid_request_error" if 400 <= exc.status < 500 else "server_error"
        return {"message": exc.message, "type": kind, "code": exc.code, "param": exc.param}
    # the server log has the traceback; the client learns that it failed, not Python's words for it
    message = "internal error: the server log has the details"
    return {"message": message, "type": "server_error", "code": "internal_error", "param": None}
