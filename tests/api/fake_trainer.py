"""A stand-in for the LoRA trainer (`service.trainings.TrainingRunner`): steps that sleep, a JSON state saved every
`save_every` steps (the resume point), samples every `sample_every` steps, and a real tiny LoRA file as its output."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

from PIL import Image

from pictale.service.trainings import Checkpoint, Choice, ChunkControl, RunnerContext, Sample


class FakeRunner:
    def __init__(self, ctx: RunnerContext, factory: FakeFactory) -> None:
        self.ctx, self.factory = ctx, factory
        self.total = ctx.spec.steps
        self.stage = "caching"
        state = ctx.state_dir / "state.json"
        self.step = json.loads(state.read_text())["step"] if state.is_file() else 0
        self.resumed_from = self.step
        self.loss: float | None = None
        self.samples: list[Sample] = []
        self.checkpoints: list[Checkpoint] = []
        self.chosen: Choice | None = None
        self.lora_path: Path | None = None
        self.closed = False

    def run_chunk(self, control: ChunkControl) -> bool:
        f = self.factory
        if self.stage == "caching":
            self.stage = "training"
            control.changed()
        started, n = time.monotonic(), 0
        while self.step < self.total and n < control.max_steps and time.monotonic() - started < control.max_seconds:
            if control.cancelled():
                return False
            if self.step + 1 == f.pause_at and not f.paused.is_set():
                f.paused.set()
                while not control.cancelled():  # held here until cancelled or the server stops
                    time.sleep(0.01)
                return False
            time.sleep(f.step_seconds)
            self.step += 1
            n += 1
            self.loss = round(1.0 / self.step, 4)
            control.on_step(self.step, self.loss)
            if self.step % f.save_every == 0:
                path = self.ctx.state_dir / "state.json"
                path.write_text(json.dumps({"step": self.step}))
                self.checkpoints.append(Checkpoint(self.step, path))
                control.changed()
            if self.step % f.sample_every == 0:
                self._sample(control)
        if self.step < self.total:
            return False
        self.stage = "saving"
        best = max(self.samples, key=lambda s: s.scores["likeness"]) if self.samples else None
        step = best.step if best else self.step
        self.chosen = Choice(step, dict(best.scores) if best else {}, f"best likeness at step {step}")
        out = self.ctx.workdir / "out" / f"{self.ctx.spec.name}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.lora, out)
        self.lora_path = out
        control.changed()
        return True

    def _sample(self, control: ChunkControl) -> None:
        self.stage = "sampling"
        control.changed()
        folder = self.ctx.workdir / "samples" / str(self.step)
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for i in range(2):
            path = folder / f"{i}.png"
            Image.new("RGB", (32, 32), (self.step % 256, 40 * i, 90)).save(path)
            images.append(path)
        scores = {"likeness": round(0.5 + 0.01 * self.step, 3), "adherence": 0.3}
        self.samples.append(Sample(self.step, tuple(images), scores, ("a photo of " + self.ctx.spec.trigger,) * 2))
        self.stage = "training"
        control.changed()

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """Builds FakeRunners and remembers them (tests read where each one resumed from)."""

    def __init__(self, lora: Path, *, step_seconds=0.005, save_every=5, sample_every=10, pause_at=None) -> None:
        self.lora = lora
        self.step_seconds = step_seconds
        self.save_every = save_every
        self.sample_every = sample_every
        self.pause_at = pause_at
        self.paused = threading.Event()
        self.runners: list[FakeRunner] = []
        self.contexts: list[RunnerContext] = []

    def __call__(self, ctx: RunnerContext) -> FakeRunner:
        self.contexts.append(ctx)
        runner = FakeRunner(ctx, self)
        self.runners.append(runner)
        return runner
