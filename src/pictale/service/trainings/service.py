"""TrainingService: accept, follow, cancel and resume trainings of one process (server or CLI).

Everything that can be checked is checked before a training is accepted (fields, base model and its family, name
collisions, every photo), so a client gets its 4xx at once, never a failed training later. The accepted training
is a row in the database and a folder DATA_DIR/trainings/ID; its job (the training's id) carries the events, so
`/v1/jobs/{id}/events` and `/v1/trainings/{id}/events` follow it. Resumable: a cancelled or failed training goes
on with `resume`, and the ones a stopped server left queued or running go on at start-up (`resume_all`), each
from the runner's last saved state.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pictale.avatars.characters import check_name as check_character_name
from pictale.core.errors import (
    AvatarExists,
    InvalidRequest,
    JobCancelled,
    PictaleError,
    TrainingBusy,
    TrainingNotFound,
    UnsupportedFeature,
)
from pictale.core.types import AvatarKind
from pictale.jobs.queue import Job
from pictale.service.trainings import finish, photos
from pictale.service.trainings.protocol import RunnerFactory, default_factory, runner_available
from pictale.service.trainings.requests import (
    TrainingFields,
    build_spec,
    check_fields,
    find_base,
    gpu_gb,
    spec_to_json,
    trainable_family,
)
from pictale.service.trainings.run import RunDeps, Stopping, TrainingRun
from pictale.service.trainings.views import training_view
from pictale.storage.trainings import TrainingStore

log = logging.getLogger(__name__)


class TrainingService:
    """Owns the training threads of one process; the steps themselves run on the generation worker."""

    def __init__(
        self,
        service: Any,
        store: TrainingStore,
        factory: RunnerFactory | None = None,
        *,
        chunk_steps: int = 10,
        chunk_seconds: float = 2.0,
    ) -> None:
        self.service = service
        self.store = store
        self.factory = factory
        self.workdirs = service.settings.data_dir / "trainings"
        self.deps = RunDeps(
            queue=service.queue,
            settings=service.settings,
            store=store,
            factory=self._make_runner,
            finish=self._finish,
            stop=threading.Event(),
            slot=threading.Lock(),
            chunk_steps=chunk_steps,
            chunk_seconds=chunk_seconds,
            workdirs=self.workdirs,
        )
        self._runs: dict[str, tuple[TrainingRun, threading.Thread]] = {}
        self._lock = threading.Lock()

    # -- entry points --------------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        fields: TrainingFields,
        files: Sequence[photos.Upload] = (),
        archive: photos.Upload | None = None,
        face_avatars: Sequence[str] = (),
        base_url: str = "",
    ) -> dict:
        """Check everything, store the photos and the training, start it; the training object (state "queued")."""
        fields = check_fields(fields, self.service.settings.max_prompt_chars)
        if self.factory is None and not runner_available():
            raise UnsupportedFeature("LoRA training is not available in this installation (no trainer found)")
        entry = find_base(self.service, fields.base_model)
        family = trainable_family(entry, fields.base_model or entry.title)
        self._check_free(owner, fields)
        spec = build_spec(fields, entry, family, gpu_gb(self.service))
        training_id = uuid.uuid4().hex
        workdir = self.workdirs / training_id
        sent = photos.collect(files, archive, face_avatars, registry=self.service.avatars, owner=owner)
        try:
            prepared = photos.prepare(sent, spec, workdir)  # the one 4xx listing every bad photo comes here
        except BaseException:
            photos.remove(workdir)  # refused: nothing stays behind
            raise
        request = {"spec": spec_to_json(spec), "character": fields.character, "base_model_title": entry.title}
        document = {
            "stage": "queued",
            "step": 0,
            "total": spec.steps,
            "loss": None,
            "photos": [dataclasses.asdict(p) for p in prepared],
            "samples": [],
            "checkpoints": [],
            "chosen": None,
            "avatar": None,
            "character": None,
        }
        self.store.create(training_id, owner, spec.name, request, document)
        self._start(training_id)
        return self.get(owner, training_id, base_url)

    def get(self, owner: str, training_id: str, base_url: str = "") -> dict:
        training = self._own(owner, training_id)
        run = self._active(training_id)
        return training_view(training, base_url, run.live if run is not None else None)

    def list(self, owner: str, base_url: str = "") -> list[dict]:
        views = []
        for training in self.store.list(owner):
            run = self._active(training["id"])
            views.append(training_view(training, base_url, run.live if run is not None else None))
        return views

    def cancel(self, owner: str, training_id: str, base_url: str = "", wait: float = 3.0) -> tuple[dict, bool]:
        """Cancel a queued or running training (its avatar is never registered); (view, True once it stopped)."""
        self._own(owner, training_id)
        job = self.service.queue.get(training_id)
        if job is not None and job.kind == "training" and job.finished is None:
            job.cancel()
        self.wait(training_id, wait)
        return self.get(owner, training_id, base_url), self._active(training_id) is None

    def resume(self, owner: str, training_id: str, base_url: str = "") -> dict:
        """Go on with a cancelled or failed training from the runner's last saved state."""
        training = self._own(owner, training_id)
        if self._active(training_id) is not None:
            raise TrainingBusy("the training is running; cancel it first (DELETE /v1/trainings/{id})")
        if training["state"] == "done":
            raise TrainingBusy(f"the training is finished: its avatar is {training['document'].get('avatar')!r}")
        self.store.save(training_id, state="queued", error=None)
        self._start(training_id)
        return self.get(owner, training_id, base_url)

    def resume_all(self) -> list[str]:
        """At start-up: trainings a stopped (or crashed) server left queued or running go on where they were."""
        ids = [t["id"] for t in self.store.active() if self._active(t["id"]) is None]
        for training_id in ids:
            self._start(training_id)
        if ids:
            log.info("resuming %d unfinished training(s)", len(ids))
        return ids

    def sample_image(self, owner: str, training_id: str, step: int, index: int) -> bytes:
        """PNG bytes of sample image `index` made at `step`."""
        training = self._own(owner, training_id)
        sample = next((s for s in training["document"].get("samples", []) if s["step"] == step), None)
        if sample is None or not 0 <= index < len(sample["images"]):
            raise TrainingNotFound(f"training {training_id} has no sample image {index} at step {step}", param="step")
        path = self.workdirs / training_id / sample["images"][index]
        if not path.is_file():
            raise TrainingNotFound(f"sample image {index} of step {step} is gone", param="step")
        return path.read_bytes()

    def stop(self, timeout: float = 30.0) -> None:
        """Server shutdown: runs stop between two steps and stay "running" in the database (resumed at start)."""
        self.deps.stop.set()
        for _, thread in list(self._runs.values()):
            thread.join(timeout)

    def wait(self, training_id: str, timeout: float | None = None) -> None:
        entry = self._runs.get(training_id)
        if entry is not None:
            entry[1].join(timeout)

    # -- runs ------------------------------------------------------------------------------------------
    def _own(self, owner: str, training_id: str) -> dict:
        training = self.store.get(training_id, owner)
        if training is None:
            raise TrainingNotFound(f"no training {training_id!r}", param="training_id")
        return training

    def _active(self, training_id: str) -> TrainingRun | None:
        entry = self._runs.get(training_id)
        return entry[0] if entry is not None and entry[1].is_alive() else None

    def _check_free(self, owner: str, fields: TrainingFields) -> None:
        """The avatar (and character) names it will register must be free now; a 409 naming them."""
        avatars, characters = self.service.avatars, self.service.characters
        if avatars is not None and fields.name in avatars.names(owner, AvatarKind.LORA):
            raise AvatarExists(f"you already have a lora avatar named {fields.name!r}", param="name")
        for other in self.store.active(owner):
            if other["name"] == fields.name:
                raise AvatarExists(f"training {other['id']} is already making the avatar {fields.name!r}", param="name")
        if fields.character is not None:
            check_character_name(fields.character, param="character")
            if characters is None:
                raise InvalidRequest("characters are not available here", param="character")
            if characters.get(owner, fields.character) is not None:
                raise AvatarExists(f"you already have a character named {fields.character!r}", param="character")

    def _start(self, training_id: str) -> None:
        training = self.store.get(training_id)
        job = Job(work=lambda job: None, kind="training", owner=training["owner"], id=training_id)
        job.meta["training"] = training_id
        self.service.queue.track(job)
        run = TrainingRun(self.deps, training, job)
        thread = threading.Thread(target=self._run, args=(run,), name=f"pictale-train-{training_id[:8]}", daemon=True)
        with self._lock:
            self._runs[training_id] = (run, thread)
        thread.start()

    def _run(self, run: TrainingRun) -> None:
        job, store = run.job, self.store
        try:
            run.run()
        except Stopping as exc:
            job._end(JobCancelled(str(exc)))  # the row stays queued/running: resumed at the next start
            return
        except JobCancelled as exc:
            store.save(run.id, document=run.doc, state="cancelled", error=None)
            job._end(exc)
            return
        except BaseException as exc:  # the training fails, the server goes on
            if not isinstance(exc, PictaleError):
                log.exception("training %s failed", run.id)
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            run.doc["error_code"] = getattr(exc, "code", "internal_error")
            store.save(run.id, document=run.doc, state="failed", error=message)
            job._end(exc)
            return
        store.save(run.id, document=run.doc, state="done", error=None)
        job._end(training_view(store.get(run.id), ""))

    def _make_runner(self, ctx: Any) -> Any:
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        return (self.factory or default_factory)(ctx)

    def _finish(self, training: dict, spec: Any, lora: Path) -> dict:
        return finish.register(self.service.avatars, self.service.characters, training, spec, lora)


def make_training_service(service: Any, db: Any, factory: RunnerFactory | None = None, **kw: Any) -> TrainingService:
    """The training service of a process, on its database (the app and `pictale train` use it)."""
    return TrainingService(service, TrainingStore(db), factory, **kw)
