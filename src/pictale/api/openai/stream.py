"""Server-sent events for `stream: true`: OpenAI's `image_generation.*` / `image_edit.*` event shapes.

Partial images are the job's live previews ("step" events that carry a base64 PNG `preview`; the worker
sends them when `job.meta["previews"]` is set). Up to `partial_images` of them go out, spread over the run:
with 2 asked, the first preview after 1/3 of the run and the first after 2/3. Then one `completed` event per
image. A job that fails sends an `error` event in OpenAI's error shape (the `openai` package raises on it).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi.concurrency import run_in_threadpool
from PIL import Image

from pictale.api.errors import openai_body
from pictale.api.openai.schemas import Delivery
from pictale.core.errors import PictaleError
from pictale.jobs.events import TERMINAL
from pictale.jobs.queue import Job
from pictale.storage.infotext import encode_image

log = logging.getLogger(__name__)
NO_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _progress(data: dict[str, Any]) -> float:
    if "progress" in data:
        return float(data["progress"])
    total = data.get("total") or 0
    return data.get("step", 0) / total if total else 0.0


def _reencode(preview: str, fmt: str) -> str:
    """Previews are PNG; a client that asked for JPEG or WEBP gets its format in every event."""
    if fmt == "png":
        return preview
    img = Image.open(io.BytesIO(base64.b64decode(preview)))
    return base64.b64encode(encode_image(img.convert("RGB"), None, fmt)).decode("ascii")


async def image_events(
    jobs: Sequence[Job],
    *,
    prefix: str,
    delivery: Delivery,
    size: str,
    output_format: str,
    finish: Callable[[list[Any]], list[bytes]],
) -> AsyncIterator[bytes]:
    """`prefix` is "image_generation" or "image_edit"; `finish(results)` encodes the final images of the jobs
    (run one after the other; the partial images are spread over all of them)."""
    common = {
        "size": size,
        "quality": delivery.quality,
        "background": delivery.background,
        "output_format": output_format,
    }
    wanted = delivery.partial_images
    marks = [(i + 1) / (wanted + 1) for i in range(wanted)]
    sent = 0
    try:
        for j, job in enumerate(jobs):
            async for event in job.events.stream():
                if event.type in TERMINAL:
                    break
                if event.type != "step" or "preview" not in event.data or sent >= wanted:
                    continue
                if (j + min(_progress(event.data), 1.0)) / len(jobs) + 1e-9 < marks[sent]:
                    continue
                b64 = await run_in_threadpool(_reencode, event.data["preview"], output_format)
                payload = {"type": f"{prefix}.partial_image", "b64_json": b64, "created_at": int(time.time())}
                yield sse(f"{prefix}.partial_image", payload | common | {"partial_image_index": sent})
                sent += 1
            await asyncio.wrap_future(job.future)  # raises the job's error
        results = [job.future.result() for job in jobs]
        for data in await run_in_threadpool(finish, results):
            payload = {"type": f"{prefix}.completed", "b64_json": base64.b64encode(data).decode("ascii")}
            yield sse(f"{prefix}.completed", payload | {"created_at": int(time.time())} | common | {"usage": NO_USAGE})
    except PictaleError as exc:
        status = 400 if exc.status == 422 else exc.status
        yield sse("error", {"type": "error"} | openai_body(exc.message, status, param=exc.param, code=exc.code))
    except Exception as exc:  # the stream has started: the status line is sent, only an event can tell
        log.exception("image stream of job %s failed", jobs[0].id if jobs else "?")
        yield sse("error", {"type": "error"} | openai_body(f"internal error: {type(exc).__name__}", 500))
    finally:
        for job in jobs:
            if not job.future.done():
                job.cancel()  # the client went away (or the stream broke): stop the work
