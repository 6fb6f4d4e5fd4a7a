"""Trainings and CLIP scoring on a worker replica, driven from the ingress (in one process, no Ray): a training's
chunks go to the replica that holds its runner; the runner's progress, samples and choice reach the ingress; a
replica that dies mid-chunk ends the chunk unfinished and the next chunk resumes on another replica; scores are
the local scorer's."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pictale.cluster.remote_work import RemoteRunner, RemoteScorer
from pictale.cluster.replica import ReplicaWorker
from pictale.core.config import Settings
from pictale.core.errors import InvalidRequest
from pictale.service.trainings.protocol import ChunkControl, RunnerContext
from pictale.training.spec import Sample
from tests.cluster.fakes import ERRORS, FakeHandle, FakeSignals, LoopThread

BUILT: list[tuple[str, str]] = []


class StepRunner:
    """Counts steps; `fail_at` raises a pictale error there. Remembers which replica built it (resumes: BUILT)."""

    def __init__(self, ctx: RunnerContext, replica: str) -> None:
        self.ctx, self.stage, self.total, self.loss = ctx, "training", 6, None
        saved = ctx.state_dir / "step"
        self.step = int(saved.read_text()) if saved.is_file() else 0  # a resumed runner starts from its state
        self.samples: list = []
        self.checkpoints: list = []
        self.chosen = None
        self.lora_path: Path | None = None
        self.closed = False
        BUILT.append((ctx.training_id, replica))

    def run_chunk(self, control: ChunkControl) -> bool:
        for _ in range(control.max_steps):
            if control.cancelled():
                return False
            self.step += 1
            time.sleep(self.ctx.spec.delay)
            if self.step == self.ctx.spec.fail_at:
                raise InvalidRequest("the photos are all the same", param="photos")
            self.loss = 1.0 / self.step
            control.on_step(self.step, self.loss)
            self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
            (self.ctx.state_dir / "step").write_text(str(self.step))
            if self.step == 3:
                self.samples.append(Sample(3, (str(self.ctx.workdir / "s3.png"),), {"likeness": 0.5}))
                control.changed()
            if self.step >= self.total:
                self.lora_path = self.ctx.workdir / "lora.safetensors"
                self.stage = "done"
                return True
        return False

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class FakeSpec:
    steps: int = 6
    fail_at: int = 0
    delay: float = 0.0


@pytest.fixture
def replicas(tmp_path):
    settings = Settings(data_dir=tmp_path, model="tiny")
    signals = FakeSignals()
    out: list[ReplicaWorker] = []
    for i in range(2):
        name = f"r{i}"
        out.append(ReplicaWorker(settings, replica=name, signals=signals,
                                 runner_factory=lambda ctx, name=name: StepRunner(ctx, name)))  # fmt: skip
    loop = LoopThread()
    yield FakeHandle(out, loop), out
    loop.close()


def _ctx(tmp_path: Path, training: str, spec: FakeSpec) -> RunnerContext:
    work = tmp_path / "trainings" / training
    return RunnerContext(training, spec, (), work, work / "state", None)


def _control(steps: list, changes: list, cancel: threading.Event | None = None) -> ChunkControl:
    return ChunkControl(
        max_steps=2,
        max_seconds=10,
        cancelled=(cancel or threading.Event()).is_set,
        on_step=lambda step, loss: steps.append((step, loss)),
        changed=lambda: changes.append(1),
    )


def test_chunks_stay_on_one_replica_and_report_back(replicas, tmp_path):
    handle, workers = replicas
    runner = RemoteRunner(handle, _ctx(tmp_path, "t1", FakeSpec()), ERRORS)
    steps, changes = [], []
    finished = [runner.run_chunk(_control(steps, changes)) for _ in range(3)]
    assert finished == [False, False, True]
    assert steps == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25), (5, 0.2), (6, 1 / 6)]
    assert (runner.step, runner.total, runner.stage) == (6, 6, "done")
    assert runner.samples == [Sample(3, (str(tmp_path / "trainings/t1/s3.png"),), {"likeness": 0.5})]
    assert runner.lora_path == tmp_path / "trainings/t1/lora.safetensors"
    assert len(changes) >= 2  # built, then the sample
    served = {replica for name, _, replica in handle.calls if name == "train_chunk"}
    assert len(served) == 1 and [b for b in BUILT if b[0] == "t1"] == [("t1", served.pop())]
    runner.close()
    held = [w for w in workers if "t1" in w.stats()["trainings"]]
    assert held == []  # closed: the runner let go


def test_a_dead_replica_ends_the_chunk_and_the_next_resumes_elsewhere(replicas, tmp_path):
    handle, _ = replicas
    runner = RemoteRunner(handle, _ctx(tmp_path, "t2", FakeSpec()), ERRORS)
    steps, changes = [], []
    assert runner.run_chunk(_control(steps, changes)) is False  # steps 1-2, state saved at 2
    handle.die_after_steps = 1
    assert runner.run_chunk(_control(steps, changes)) is False  # its replica died: unfinished, no error
    while not runner.run_chunk(_control(steps, changes)):
        pass
    assert runner.step == 6
    builders = [replica for t, replica in BUILT if t == "t2"]
    assert len(builders) == 2 and builders[0] != builders[1]  # rebuilt on the other replica from its state
    assert [s for s, _ in steps][-2:] == [5, 6]


def test_a_runner_error_reaches_the_ingress_whole(replicas, tmp_path):
    handle, _ = replicas
    runner = RemoteRunner(handle, _ctx(tmp_path, "t3", FakeSpec(fail_at=2)), ERRORS)
    with pytest.raises(InvalidRequest) as err:
        runner.run_chunk(_control([], []))
    assert (err.value.message, err.value.param) == ("the photos are all the same", "photos")


def test_cancel_ends_the_chunk_on_the_replica(replicas, tmp_path):
    handle, _ = replicas
    cancel = threading.Event()
    runner = RemoteRunner(handle, _ctx(tmp_path, "t4", FakeSpec(steps=1000, delay=0.02)), ERRORS)
    steps: list = []
    control = ChunkControl(max_steps=1000, max_seconds=60, cancelled=cancel.is_set,
                           on_step=lambda step, loss: (steps.append(step), step == 3 and cancel.set()),
                           changed=lambda: None)  # fmt: skip
    started = time.monotonic()
    assert runner.run_chunk(control) is False
    assert time.monotonic() - started < 5
    assert 3 <= steps[-1] < 50  # stopped within a few steps of the cancel, on the replica
    assert runner.run_chunk(control) is False  # still cancelled: nothing is sent


def test_remote_scores_are_the_local_scorers(replicas, tiny_clip):
    from PIL import Image

    from pictale.engine.clip_scoring import ClipScorer

    handle, _ = replicas
    remote, local = RemoteScorer(handle, str(tiny_clip)), ClipScorer(str(tiny_clip))
    image = Image.new("RGB", (32, 32), (200, 30, 40))
    assert remote.text_features(["a red square"]) == local.text_features(["a red square"])
    assert remote.image_features([image]) == local.image_features([image])
