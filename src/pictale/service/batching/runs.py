"""Queued generations that share the worker's run: whole-batch merging (`run_merged`) and continuous runs that
take in newcomers between denoising steps (`run_stream`, engine.stepping). Which jobs may share a run is
service.batching's business; how the queue hands them over is jobs.queue's and jobs.streaming's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pictale.jobs.queue import Job
    from pictale.jobs.streaming import Admission
    from pictale.service.generation import GenerationService


def run_merged(svc: GenerationService, jobs: list[Job]) -> list[Any]:
    """Jobs with equal batch keys as one engine call; per job its result or the exception that ended it."""
    from pictale.engine.batching import BatchItem

    specs = [job.batch.payload for job in jobs]
    svc._load_for(specs[0][0])
    items = []
    for job, (spec, texts) in zip(jobs, specs, strict=True):
        seeds, subseeds = svc.resolve_seeds(spec)
        control = svc._control(job, spec, on_cancelled=job.end_cancelled)
        items.append(BatchItem(spec, texts.prompts, texts.negatives, seeds, subseeds, control))
    results: list[Any] = []
    for (spec, texts), out in zip(specs, svc.engine.generate_batch(items), strict=True):
        try:
            results.append(out if isinstance(out, BaseException) else svc._result(spec, texts, out, None))
        except Exception as exc:  # one job's result failed to build: only that job fails
            results.append(exc)
    return results


def run_stream(svc: GenerationService, jobs: list[Job], admission: Admission) -> None:
    """Jobs with equal stream keys in one continuous run: newcomers join between steps, each job ends (result
    built, PNGs encoded) as soon as its images are decoded, while the others go on."""
    from pictale.engine.batching import BatchItem

    svc._load_for(jobs[0].batch.payload[0])
    owners: dict[int, tuple[Job, Any]] = {}

    def item_of(job: Job) -> BatchItem:
        spec, texts = job.batch.payload
        seeds, subseeds = svc.resolve_seeds(spec)
        item = BatchItem(spec, texts.prompts, texts.negatives, seeds, subseeds, svc._control(job, spec))
        owners[id(item)] = (job, job.batch.payload)
        return item

    def admit() -> list[BatchItem]:
        return [item_of(job) for job in admission.more()]

    def finish(item: BatchItem, outcome: Any) -> None:
        job, (spec, texts) = owners.pop(id(item))
        if not isinstance(outcome, BaseException):
            try:
                outcome = svc._result(spec, texts, outcome, None)
            except Exception as exc:  # one job's result failed to build: only that job fails
                outcome = exc
        admission.finish(job, outcome)

    svc.engine.generate_stream([item_of(job) for job in jobs], admit, finish)
