"""Live previews of a running generation, made only when someone can use them.

Who asks: an entry point that streams (`job.meta["previews"]`: True for every `settings.preview_every` steps,
or a number of steps), and A1111 clients polling `GET /sdapi/v1/progress` (`request_previews`), every
`show_progress_every_n_steps` steps while `live_previews_enable` is on. The engine hands over latents; the
preview (a small base64 PNG, no VAE pass) goes into the job's next "step" event and stays on `job.preview`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pictale.jobs.queue import Job, Regroup

A1111_KEY = "a1111_previews"


def request_previews(job: Job) -> None:
    """An A1111 client polls progress with `current_image`: the job makes previews from now on."""
    job.meta[A1111_KEY] = True


def preview_every(job: Job, default_every: int, options: dict[str, Any]) -> int:
    """Steps between previews for this job now; 0: none."""
    wanted = job.meta.get("previews")
    every = 0
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
        every = wanted
    elif wanted:
        every = max(0, default_every)
    if job.meta.get(A1111_KEY) and options.get("live_previews_enable", True):
        a1111 = int(options.get("show_progress_every_n_steps") or 0)
        if a1111 > 0:
            every = min(every, a1111) if every else a1111
    return every


class LivePreviews:
    """The job's `on_latents` / `on_step` pair for the engine's RunControl.

    `regroup(step, total)`, when given, is asked before each step is reported; True raises `Regroup` (the run
    starts over with company that just arrived, see jobs.queue)."""

    def __init__(
        self,
        job: Job,
        every: Callable[[], int],
        render: Callable[[Any], str | None],
        regroup: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.job = job
        self.every = every
        self.render = render
        self.regroup = regroup
        self._pending: str | None = None

    def on_latents(self, step: int, latents: Any) -> None:
        every = self.every()
        if every > 0 and step % every == 0:
            self._pending = self.render(latents[:1])

    def on_step(self, step: int, total: int, batch_no: int = 0, batch_count: int = 1) -> None:
        if self.regroup is not None and self.regroup(step, total):
            raise Regroup
        preview, self._pending = self._pending, None
        self.job.report(step, total, batch_no, batch_count, preview=preview)
