"""The gallery recorder on a real queue with fake work: what it keeps (results, interrupted ones too), what it
leaves (failed, cancelled, book candidates), retention after each insert, and a worker that survives its errors."""

from __future__ import annotations

import logging
import threading

import pytest
from PIL import Image

from pictale.core.config import Settings
from pictale.core.errors import JobCancelled, PictaleError
from pictale.core.types import GenerationSpec
from pictale.jobs.queue import Job, JobQueue, JobState
from pictale.service.gallery import GalleryRecorder, is_recorded
from pictale.service.results import GenerationResult
from pictale.storage.db import Database
from pictale.storage.gallery import GalleryStore
from pictale.storage.infotext import encode_png


def result(*seeds: int, prompt: str = "a fox", interrupted: bool = False, data: bytes | None = None):
    images = [data or encode_png(Image.new("RGB", (32, 16), (s % 256, 0, 0)), f"{prompt}\nSeed: {s}") for s in seeds]
    return GenerationResult(
        spec=GenerationSpec(prompt=prompt),
        images=images,
        pil_images=[],
        infotexts=[f"{prompt}\nSteps: 2, Seed: {s}, Size: 32x16" for s in seeds],
        prompts=[prompt] * len(seeds),
        negative_prompts=["ugly"] * len(seeds),
        seeds=list(seeds),
        subseeds=list(seeds),
        model=None,
        interrupted=interrupted,
    )


@pytest.fixture
def db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    db.migrate()
    yield db
    db.dispose()


def make(db, tmp_path, **overrides) -> tuple[JobQueue, GalleryRecorder]:
    recorder = GalleryRecorder(GalleryStore(db, tmp_path / "gallery"), Settings(data_dir=tmp_path, **overrides))
    queue = JobQueue(8)
    recorder.attach(queue)
    queue.start()
    return queue, recorder


@pytest.fixture
def setup(db, tmp_path):
    queue, recorder = make(db, tmp_path)
    yield queue, recorder
    queue.stop()
    recorder.close()


def run(queue: JobQueue, outcome, *, owner: str | None = "k1", meta: dict | None = None) -> Job:
    def work(job):
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    job = queue.submit(Job(work=work, owner=owner, meta=meta or {}))
    job.future.exception(timeout=10)
    return job


def test_a_finished_generation_is_kept_with_its_texts(setup):
    queue, recorder = setup
    job = run(queue, result(5, 6))
    recorder.settle("k1")
    images, _ = recorder.store.list("k1")
    assert [i.seed for i in images] == [6, 5]  # newest first: the second image of the job
    assert (
        {i.job_id for i in images} == {job.id} and images[0].prompt == "a fox" and images[0].negative_prompt == "ugly"
    )
    assert images[1].infotext == "a fox\nSteps: 2, Seed: 5, Size: 32x16" and (images[1].width, images[1].height) == (
        32,
        16,
    )
    assert recorder.store.read(images[1]) == job.future.result().images[0]


def test_interrupted_results_are_kept_and_ownerless_jobs_are_the_local_users(setup):
    queue, recorder = setup
    run(queue, result(1, interrupted=True), owner=None)
    recorder.settle("local")
    assert recorder.store.count("local") == 1


def test_failed_cancelled_and_book_jobs_leave_nothing(setup):
    queue, recorder = setup
    run(queue, PictaleError("boom"))
    run(queue, JobCancelled("the job was cancelled"))
    book = run(queue, result(1), meta={"book": "b1"})
    assert book.state is JobState.DONE
    assert not is_recorded(book) and not is_recorded(Job(work=lambda j: None, kind="load"))
    run(queue, "not a generation result")
    run(queue, result(2))  # the writer is one thread: this one is written after any of the above
    recorder.settle("k1")
    assert [i.seed for i in recorder.store.list("k1")[0]] == [2]


def test_a_job_cancelled_while_queued_leaves_nothing(setup):
    queue, recorder = setup
    gate = threading.Event()
    queue.submit(Job(work=lambda job: gate.wait(10), kind="test"))
    job = queue.submit(Job(work=lambda job: result(1), owner="k1"))
    job.cancel()
    gate.set()
    run(queue, result(2))
    recorder.settle("k1")
    assert [i.seed for i in recorder.store.list("k1")[0]] == [2]


def test_retention_applies_after_each_insert(db, tmp_path):
    queue, recorder = make(db, tmp_path, gallery_max_images=2)
    try:
        for seed in (1, 2, 3):
            run(queue, result(seed))
        run(queue, result(9), owner="k2")
        recorder.settle("k1")
        recorder.settle("k2")
        assert [i.seed for i in recorder.store.list("k1")[0]] == [3, 2]
        assert recorder.store.count("k2") == 1
    finally:
        queue.stop()
        recorder.close()


def test_a_write_that_fails_is_logged_and_the_worker_goes_on(setup, caplog):
    queue, recorder = setup
    with caplog.at_level(logging.ERROR, logger="pictale.service.gallery.recorder"):
        run(queue, result(1, data=b"not an image"))
        recorder.settle("k1")
    assert "could not keep the images" in caplog.text
    run(queue, result(2))
    recorder.settle("k1")
    assert [i.seed for i in recorder.store.list("k1")[0]] == [2]


def test_an_observer_that_raises_never_fails_a_submit(caplog):
    queue = JobQueue(8)
    queue.on_submit.append(lambda job: 1 / 0)
    queue.start()
    try:
        with caplog.at_level(logging.ERROR, logger="pictale.jobs.queue"):
            job = queue.submit(Job(work=lambda job: 42))
        assert job.future.result(timeout=10) == 42 and "observer failed" in caplog.text
    finally:
        queue.stop()
