"""The real training runner the service drives (`service.trainings.protocol`): `make_runner(ctx)`.

On the worker thread, chunk by chunk:

1. first chunk: load the base model through `engine.models` (its own copy: the serving pipeline keeps serving),
   caption the photos with a local model when there is one (`captioner`), build the `LoraTrainer`, resume from
   the newest complete checkpoint in `ctx.state_dir` when there is one, else cache latents and score the base
   (step 0: the likeness and prompt adherence a LoRA must beat);
2. `spec.checkpoint_every` steps at a time, in chunks of at most `control.max_steps` steps: after each
   checkpoint, save it (`state.write_checkpoint`: trainer state + the kohya file), draw the samples (fixed
   prompts and seeds), score them (CLIP-I to the photos, CLIP-T to the prompts; for face and character
   trainings with the `faces` extra installed, the dlib face similarity to the photos, which then is the likeness:
   `face_likeness`), and stop early when likeness has fallen at two samples in a row after its best;
3. at the end: choose the best checkpoint (`scoring.choose`, which says why), and write its kohya file with
   pictale's metadata (base model and hash, preset, rank, steps, trigger, chosen step and scores) as `lora_path`.

Without a CLIP model the samples are drawn unscored and the last checkpoint is kept (the reason says so).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from PIL import Image

from pictale.engine import models
from pictale.engine.runtime import pick_device, pick_dtype
from pictale.training import face_likeness, scoring, state
from pictale.training.captioner import caption_photos
from pictale.training.export import build_metadata, save_kohya
from pictale.training.loop import LoraTrainer
from pictale.training.spec import Checkpoint, Choice, Sample

log = logging.getLogger(__name__)

SAMPLE_STEPS = {"sd15": 20, "sdxl": 20, "flux": 20}
TINY_SAMPLE_STEPS = 4
KEEP_CHECKPOINTS = 4
SCORES_FILE = "scores.json"
SCORE_KEYS = ("likeness", "adherence", "clip_i", "face", "face_found")
"""What a sample's scores hold: likeness (face when scored, else clip_i), adherence (CLIP-T), clip_i (CLIP image
similarity), face (dlib face similarity, 1 - distance: above 0.4 is the same person) and face_found (the share of
samples with a face). The last three only where measured."""
FACE_KINDS = ("face", "character")


def clip_source(settings: Any, entry) -> str | None:
    """The CLIP that scores samples, as for books: `--clip-model`, else the first folder in `models/CLIP/`, else
    the tiny CLIP beside a tiny base model; None: no scores."""
    from pictale.engine.demo.layout import is_tiny

    if settings.clip_model and settings.clip_model != "tiny":
        return settings.clip_model
    clip_dir = Path(settings.clip_path)
    found = sorted(p.parent for p in clip_dir.glob("*/config.json")) if clip_dir.is_dir() else []
    if found and settings.clip_model != "tiny":
        return str(found[0])
    if settings.clip_model == "tiny" or is_tiny(entry):
        from pictale.engine.tiny.clip import ensure_tiny_clip

        return str(ensure_tiny_clip(settings.demo_path))
    return None


def store_base_compactly(pipe, spec) -> str | None:
    """FLUX.1 on 12-16 GB cards (`presets.memory_preset`: `extra["base_quantization"]`): the frozen transformer's
    weights stored in fp8 and computed in the pipeline's dtype (layerwise casting); the LoRA's own weights stay in
    fp32. "nf4" (bitsandbytes 4-bit) is stored as fp8 too: pictale trains on a base it loaded itself, and fp8
    layerwise storage needs no second load. Returns what was applied."""
    import torch

    wanted = spec.extra.get("base_quantization")
    if spec.family != "flux" or wanted not in ("fp8", "nf4"):
        return None
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=pipe.transformer.dtype)
    log.info("training base transformer stored in fp8 (asked: %s)", wanted)
    return "fp8"


class Runner:
    """One training, driven chunk by chunk (see the module docstring)."""

    def __init__(self, ctx) -> None:
        self.ctx, self.spec, self.settings = ctx, ctx.spec, ctx.settings
        self.stage = "preparing"
        self.step = 0
        self.total = self.spec.steps
        self.loss: float | None = None
        self.samples: list[Sample] = []
        self.checkpoints: list[Checkpoint] = []
        self.chosen: Choice | None = None
        self.lora_path: Path | None = None
        self.history: list[dict] = self._read_history()
        self.trainer: LoraTrainer | None = None
        self.entry = None
        self._clip: Any = None
        self._clip_source: str | None = None
        self._face_refs: list | None = None  # the photos' face descriptors; [] when face likeness is off
        self._stopped_early = False

    # -- the protocol ----------------------------------------------------------------------------

    def run_chunk(self, control) -> bool:
        if self.trainer is None:
            self._start(control)
        trainer = self.trainer
        deadline = time.monotonic() + max(0.0, control.max_seconds)
        done_steps = 0
        every = self.spec.checkpoint_every
        while not trainer.done and not self._stopped_early:
            if control.cancelled():
                return False
            if done_steps >= control.max_steps or time.monotonic() >= deadline:
                return False  # the worker goes to the generation requests queued meanwhile
            for step, loss in trainer.step_chunk(1, cancel=control.cancelled):
                self.step, self.loss = step, loss if self.loss is None else 0.9 * self.loss + 0.1 * loss
                control.on_step(step, self.loss)
            done_steps += 1
            if trainer.step % every == 0 or trainer.done:
                self._checkpoint(control)
                if not trainer.done and not self._stopped_early:
                    return False  # sampling took a while: let generation run before the next steps
        if control.cancelled():
            return False
        self._finish(control)
        return True

    def close(self) -> None:
        self.trainer = None
        self._clip = None

    # -- stages ----------------------------------------------------------------------------------

    def _set_stage(self, stage: str, control) -> None:
        self.stage = stage
        control.changed()

    def _start(self, control) -> None:
        settings, spec = self.settings, self.spec
        self.entry = models.resolve_model(spec.base_model, settings.models_path, settings.demo_path)
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        from pictale.engine.families.flux.files import flux_options

        pipe = models.load_pipeline(self.entry, device=device, dtype=dtype, flux=flux_options(settings))
        compute = pipe.dtype  # the dtype the model computes in, whatever its weights are stored in
        store_base_compactly(pipe, spec)
        photos = caption_photos(list(self.ctx.photos), spec, settings.models_path, device=device)
        self.trainer = LoraTrainer(pipe, spec, photos, self.ctx.workdir, device=device, dtype=compute)
        self._clip_source = clip_source(settings, self.entry)
        latest = state.latest_checkpoint(self.ctx.state_dir)
        self.trainer.prepare(on_stage=lambda stage: self._set_stage(stage, control))
        if latest is not None:
            self.trainer.load_state(latest)
            self.step = self.trainer.step
            self.checkpoints = [Checkpoint(step, path) for step, path in state.checkpoints(self.ctx.state_dir)]
            self.samples = [self._sample_of(h) for h in self.history if 0 < h["step"] <= self.step]
            self.history = [h for h in self.history if h["step"] <= self.step]
            log.info("training %s resumes at step %d", self.ctx.training_id, self.step)
            if not any(h["step"] == self.step for h in self.history):
                self._after_checkpoint(control)  # stopped (or killed) between saving it and sampling it
            elif self._should_stop():
                self._stopped_early = True  # stopped after the early stop was decided, before the export
        elif not any(h["step"] == 0 for h in self.history):
            self._sample(control, base=True)  # the base: what the LoRA must beat
        self._set_stage("training", control)

    def _checkpoint(self, control) -> None:
        path = state.write_checkpoint(self.trainer, self.ctx.state_dir, metadata=self._metadata())
        self.checkpoints.append(Checkpoint(self.trainer.step, path))
        control.changed()
        self._after_checkpoint(control)

    def _after_checkpoint(self, control) -> None:
        """The saved checkpoint's samples and scores, pruning, and the early-stop decision."""
        self._sample(control)
        protect = (self._best()[0],) if self._scored() else ()
        state.prune_checkpoints(self.ctx.state_dir, keep=KEEP_CHECKPOINTS, protect=protect)
        self.checkpoints = [Checkpoint(step, path) for step, path in state.checkpoints(self.ctx.state_dir)]
        if self._should_stop():
            self._stopped_early = True
            log.info("training %s stops early at step %d: likeness fell", self.ctx.training_id, self.trainer.step)
        self._set_stage("training", control)

    def _sample(self, control, *, base: bool = False) -> None:
        self._set_stage("sampling", control)
        spec, trainer = self.spec, self.trainer
        prompts = self._prompts()
        size = (spec.resolution, spec.resolution)
        steps = TINY_SAMPLE_STEPS if self._tiny() else SAMPLE_STEPS.get(spec.family, 20)
        images = scoring.sample(
            trainer.pipe, prompts, list(spec.sample_seeds), size, steps=steps, scale=0.0 if base else 1.0
        )
        step = 0 if base else trainer.step
        folder = self.ctx.workdir / "samples" / f"{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, image in enumerate(images):
            path = folder / f"{i:02d}.png"
            image.save(path)
            paths.append(path)
        scores = self._score(images, prompts)
        record = {"step": step, "images": [str(p) for p in paths], "prompts": prompts, **scores}
        self.history = [h for h in self.history if h["step"] != step] + [record]
        self._write_history()
        if not base:
            self.samples.append(self._sample_of(record))
        control.changed()

    def _finish(self, control) -> None:
        self._set_stage("saving", control)
        best, reason = self._best()
        chosen = next((h for h in self.history if h["step"] == best), {})
        scores = {k: chosen.get(k) for k in SCORE_KEYS if k in chosen}
        folder = dict(state.checkpoints(self.ctx.state_dir)).get(best)
        if folder is None:  # pruned or never written (a run that ended between checkpoints): save it now
            folder = state.write_checkpoint(self.trainer, self.ctx.state_dir, metadata=self._metadata())
            best = self.trainer.step
        out = self.ctx.workdir / f"{self.spec.name}.safetensors"
        extra = {"pictale_chosen_step": str(best), "pictale_scores": json.dumps(scores), "pictale_choice": reason}
        extra.update(self._metadata())
        trainer_meta = build_metadata(self.spec, self.trainer.photos, step=best, extra=extra)
        self.lora_path = save_kohya(folder, out, trainer_meta)
        self.chosen = Choice(best, scores, reason)
        self._set_stage("done", control)

    # -- scores ----------------------------------------------------------------------------------

    def _score(self, images: list[Image.Image], prompts: list[str]) -> dict[str, float | None]:
        scores: dict[str, float | None] = {"likeness": None, "adherence": None}
        if self._clip_source is not None:
            if self._clip is None:
                from pictale.engine.clip_scoring import ClipScorer

                self._clip = ClipScorer(self._clip_source)
            spec = self.spec
            texts = [scoring.clip_prompt(p, spec.trigger, spec.class_word) for p in prompts]
            got = scoring.score(images, self.trainer.photos, texts, self._clip)
            scores = {"likeness": got["clip_i"], "adherence": got["clip_t"], "clip_i": got["clip_i"]}
        if self._face_references():
            face = face_likeness.compare(face_likeness.descriptors(images), self._face_refs)
            # No face in any sample: the least like the person (0.0), not CLIP-I, which is on another scale.
            scores.update(face=face.similarity, face_found=face.found, likeness=face.similarity or 0.0)
        return scores

    def _face_references(self) -> bool:
        """Whether likeness is the face similarity: a face or character training, the `faces` extra installed and a
        face in at least one photo. The photos' descriptors are computed once."""
        if self._face_refs is None:
            self._face_refs = []
            if self.spec.kind in FACE_KINDS and face_likeness.available():
                refs = face_likeness.descriptors(self.trainer.photos)
                self._face_refs = [r for r in refs if r is not None]
                log.info("face likeness: a face in %d of %d photos", len(self._face_refs), len(refs))
        return bool(self._face_refs)

    def _should_stop(self) -> bool:
        return self.spec.early_stop and self._scored() and scoring.should_stop(self._named())

    def _scored(self) -> bool:
        return any(h["step"] > 0 and h.get("likeness") is not None for h in self.history)

    def _named(self) -> list[dict]:
        """The history in `scoring`'s names (clip_i: likeness, clip_t: prompt adherence), oldest first. Without a CLIP
        model (face likeness only) the base is left out and adherence reads 0: the best likeness wins."""
        rows = sorted(self.history, key=lambda h: h["step"])
        rows = [h for h in rows if h["step"] > 0 or h.get("adherence") is not None]
        return [{"step": h["step"], "clip_i": h["likeness"], "clip_t": h.get("adherence") or 0.0} for h in rows]

    def _best(self) -> tuple[int, str]:
        if not self._scored():
            last = max((h["step"] for h in self.history), default=self.trainer.step)
            return last, "no CLIP model to score the samples: kept the last checkpoint"
        step, reason = scoring.choose(self._named())
        if self._face_references():
            reason = reason.replace("likeness", "face likeness", 1)
        if self._stopped_early:
            reason += "; stopped early: likeness fell at two samples in a row"
        return step, reason

    # -- helpers ---------------------------------------------------------------------------------

    def _prompts(self) -> list[str]:
        spec = self.spec
        prompts = spec.sample_prompts or (f"a photo of {{trigger}} {spec.class_word}",)
        return [p.replace("{trigger}", spec.trigger) for p in prompts]

    def _tiny(self) -> bool:
        from pictale.engine.demo.layout import is_tiny

        return is_tiny(self.entry)

    def _metadata(self) -> dict[str, str]:
        entry = self.entry
        return {
            "pictale_base_model": entry.model_name if entry is not None else self.spec.base_model,
            "pictale_base_model_sha256": (entry.sha256 or "") if entry is not None else "",
            "pictale_preset": self.spec.kind,
        }

    @staticmethod
    def _sample_of(record: dict) -> Sample:
        scores = {k: record.get(k) for k in SCORE_KEYS if k in record}
        return Sample(record["step"], tuple(Path(p) for p in record["images"]), scores, tuple(record["prompts"]))

    def _read_history(self) -> list[dict]:
        path = self.ctx.workdir / SCORES_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def _write_history(self) -> None:
        path = self.ctx.workdir / SCORES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.history), encoding="utf-8")
        tmp.replace(path)


def make_runner(ctx) -> Runner:
    """The runner `service.trainings.protocol.default_factory` builds on the worker."""
    return Runner(ctx)
