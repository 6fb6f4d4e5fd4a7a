"""GenerationService: the one service every entry point (A1111 API, CLI, later OpenAI and jobs) uses."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pictale.core.config import Settings
from pictale.core.errors import CheckpointUnloadable, InvalidRequest, ModelLoadError, ModelNotFound
from pictale.core.images import (
    overlay_result,
)
from pictale.core.limits import SEED_MAX, check_finite
from pictale.core.types import GenerationSpec, Mode, ModelEntry
from pictale.engine.demo.layout import DEMO_NAME, is_demo
from pictale.jobs.finishing import Later
from pictale.jobs.queue import Batchable, Job, JobQueue
from pictale.prompt.compile import compile_negative, compile_prompt
from pictale.service.avatars import OwnerResolver, avatar_infotext
from pictale.service.batching import batch_key, stream_key
from pictale.service.batching import runs as merging
from pictale.service.characters import expand_characters
from pictale.service.flux import distilled_infotext, fit_flux_job
from pictale.service.img2img import prepare_images
from pictale.service.limits import check_spec
from pictale.service.models import A1111_OPTION_DEFAULTS, ModelCatalog, unloadable_message
from pictale.service.previews import LivePreviews, preview_every
from pictale.service.profiles import profile_of_request
from pictale.service.results import GenerationResult, encode_later, hires_params, infotext_params, make_infotext
from pictale.service.speed.engine_setup import make_engine
from pictale.service.styles import StyleStore

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"


@dataclass(frozen=True)
class PromptTexts:
    """Per image: what the text encoder sees, and what the infotext shows (tokens kept, as A1111 does)."""

    prompts: list[str]
    negatives: list[str]
    shown_prompts: list[str]
    shown_negatives: list[str]


class GenerationService:
    """Owns the queue, the worker's engine, the model catalog and the A1111 options."""

    def __init__(self, settings: Settings, engine: Any | None = None, *, workers: int = 1) -> None:
        """`workers` > 1 only with an engine that may run jobs side by side (remote replicas)."""
        self.settings = settings
        self.queue = JobQueue(
            settings.queue_size,
            batch_max=settings.batch_max,
            retention=settings.job_retention_minutes * 60,
            keep_max=settings.jobs_kept,
            workers=workers,
        )
        self.catalog = ModelCatalog(settings)
        self.styles = StyleStore(settings.data_dir / "styles.csv")
        self._engine = engine
        self.options: dict[str, Any] = dict(A1111_OPTION_DEFAULTS)
        self.last_job: Job | None = None
        self.avatars: Any | None = None
        """The avatar registry (set by the app); None: no avatars, `<be-...>` tokens are refused."""
        self.characters: Any | None = None
        """The character store (set by the app); None: `<be-char:...>` tokens are refused."""
        self.startup_notes: list[str] = []
        self.tasks_aside = False
        """True on Ray: `on_worker` tasks (CLIP scoring) only call replicas, so they take no queue worker slot."""

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.settings)  # lazy: keeps torch out of API/CLI import time
        return self._engine

    def start(self) -> ModelEntry:
        """Scan models, pick the start-up model (falling back to the tiny demo) and load it."""
        self.queue.start()
        self.catalog.migrate_legacy_demo()
        self.catalog.refresh()
        entry = self._startup_entry()
        self.switch_model(entry.title)
        if self.settings.deterministic and not getattr(self.engine, "batches_identically", False):
            self.queue.batch_max = 1  # merged rows are bit-identical to lone runs only there (CPU float32)
        return entry

    def stop(self) -> None:
        self.queue.stop()

    def _startup_entry(self) -> ModelEntry:
        """The configured model; else the first checkpoint found, whatever its name; else the tiny demo."""
        wanted = self.settings.model
        if wanted and wanted.strip().lower() != "tiny":
            return self.catalog.find(wanted)
        if self.catalog.entries and not wanted:
            return self.catalog.entries[0]
        entry = self.catalog.demo()
        if not wanted:
            self.startup_notes.append(
                f"NO MODEL FOUND: serving the tiny demo model {DEMO_NAME!r} (random weights, it draws noise). "
                f"Looked for --model / PICTALE_MODEL and for checkpoints in {self.settings.checkpoints_path}. "
                "Add a real "
                "model: drop a .safetensors checkpoint or a diffusers folder there, or run "
                "`pictale models pull HUB_ID`, or start with `--model PATH_OR_HUB_ID`."
            )
        return entry

    # -- models ----------------------------------------------------------------------------------
    @property
    def current_model(self) -> ModelEntry | None:
        return self.engine.entry if self._engine is not None else None

    @property
    def loras_dir(self) -> Path:
        """Where `<lora:NAME>` finds files: the demo's own Lora dir while the demo is loaded, else the user's."""
        if is_demo(self.current_model):
            return Path(self.current_model.filename).parent / "Lora"
        return self.settings.loras_path

    def switch_model(self, name: str) -> ModelEntry:
        """Load the named checkpoint on the worker; blocks until it is loaded (A1111 `POST /options`)."""
        entry = self.catalog.find(name)
        job = self.queue.submit(Job(work=lambda job: self._load(entry), kind="load"))
        return job.future.result()

    def on_worker(self, fn: Any, *, kind: str = "task") -> Job:
        """Queue `fn()` on the worker thread (e.g. CLIP scoring): torch work on a second thread competes with
        the worker's thread pool and slows generation down (measured: about 20% on 2 cores)."""
        job = Job(work=lambda job: fn(), kind=kind)
        return self.queue.run_aside(job) if self.tasks_aside else self.queue.submit(job)

    def _load(self, entry: ModelEntry) -> ModelEntry:
        """Make `entry` the configured checkpoint (the A1111 option) and load it."""
        loaded = self._ensure_loaded(entry)
        self.options["sd_model_checkpoint"] = loaded.title
        self.options["sd_checkpoint_hash"] = loaded.sha256
        return loaded

    def _ensure_loaded(self, entry: ModelEntry) -> ModelEntry:
        if self.engine.entry is None or self.engine.entry.filename != entry.filename:
            try:
                self.engine.load(entry)  # on failure the engine loads the previous model again
            except CheckpointUnloadable:
                raise
            except ModelLoadError as exc:
                name = Path(entry.filename).name if entry.source != "hub" else entry.filename
                raise CheckpointUnloadable(unloadable_message(name, exc.message), param="sd_model_checkpoint") from None
        return self.engine.entry

    def set_options(self, values: dict[str, Any]) -> None:
        """Apply A1111 settings; unknown keys are kept (A1111 clients post the whole dict back)."""
        values = dict(values)
        for key, value in values.items():
            if isinstance(value, float):
                check_finite(value, key)
        wanted = values.pop("sd_model_checkpoint", None)
        values.pop("sd_checkpoint_hash", None)
        if "CLIP_stop_at_last_layers" in values:
            clip_skip = values["CLIP_stop_at_last_layers"]
            if not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12:
                raise InvalidRequest("CLIP_stop_at_last_layers must be an integer from 1 to 12", param="options")
        if "samples_format" in values and str(values["samples_format"]).lower() not in (
            "png",
            "jpg",
            "jpeg",
            "webp",
        ):
            raise InvalidRequest("samples_format must be png, jpg or webp", param="samples_format")
        self.options.update(values)
        if wanted and wanted != self.options.get("sd_model_checkpoint"):
            self.switch_model(str(wanted))

    # -- generation ------------------------------------------------------------------------------
    def submit(
        self, spec: GenerationSpec, *, owner: str | None = None, session: str | None = None, meta: dict | None = None
    ) -> Job:
        """Validate, resolve avatar tokens for `owner`, and queue; the job's future yields a GenerationResult.

        `session`: a new job of the same owner and session cancels the older one, queued or running (a chat
        that moved on never waits for a stale picture). `meta` stays with the job; `meta["previews"]` (True,
        or a number of steps) asks for live previews in its "step" events.
        """
        spec = self.normalize(self.styles.apply(spec))
        spec, texts = self.compile(spec, owner or LOCAL_OWNER)
        batch = self._batchable(spec, texts, owner)
        job = Job(
            work=lambda job: self._generate(spec, job, texts),
            owner=owner,
            session=session,
            meta=dict(meta or {}),
            batch=batch,
        )
        if session is not None:
            for old in self.queue.jobs():
                if old.session == session and old.owner == owner and old.kind == "generate" and old.finished is None:
                    old.cancel()
        self.queue.submit(job)
        self.last_job = job
        return job

    def _batchable(self, spec: GenerationSpec, texts: PromptTexts, owner: str | None) -> Batchable | None:
        """How the job may share a run: continuous (service.batching.stream_key), merged whole, or never (None)."""
        size, payload = spec.total_images, (spec, texts)
        key = stream_key(spec) if self.settings.continuous_batching else None
        if key is not None:
            return Batchable(key, self._generate_batch, size, payload, stream=self._generate_stream)
        key = batch_key(spec)
        # One owner per merged batch: A1111 interrupt and skip stop a whole merged call, and one key's
        # interrupt must never stop another key's images.
        return Batchable((owner, key), self._generate_batch, size, payload) if key is not None else None

    def generate(self, spec: GenerationSpec, **kw: Any) -> GenerationResult:
        """Synchronous helper (CLI, tests)."""
        return self.submit(spec, **kw).future.result()

    def normalize(self, spec: GenerationSpec) -> GenerationSpec:
        """Every limit checked before the job is queued (service.limits); sizes floored to multiples of 8 (16 on
        FLUX.1, whose jobs also get their T5 length: service.flux)."""
        spec = check_spec(self.settings, spec)
        if spec.model:
            try:
                self.catalog.find(spec.model)
            except ModelNotFound as exc:
                raise ModelNotFound(exc.message, param="sd_model_checkpoint") from None
        profile, _ = profile_of_request(self, spec.model)
        return fit_flux_job(spec, profile.variant, profile.t5_tokens)

    def compile(self, spec: GenerationSpec, owner: str) -> tuple[GenerationSpec, PromptTexts]:
        """Expand characters, parse avatar tokens (422 on any problem, before queueing); texts go to the encoder."""
        resolver = OwnerResolver(self.avatars, owner, self.loras_dir)
        n = spec.total_images
        shown = _per_image(spec.extra.get("prompts") or [spec.prompt], n)  # as sent: <be-char:...> kept
        shown_negatives = _per_image(spec.extra.get("negative_prompts") or [spec.negative_prompt], n)
        spec = expand_characters(self.characters, owner, spec)  # first: characters bring avatar tokens
        prompts = _per_image(spec.extra.get("prompts") or [spec.prompt], n)
        negatives = _per_image(spec.extra.get("negative_prompts") or [spec.negative_prompt], n)
        positive = {p: compile_prompt(p, resolver) for p in dict.fromkeys(prompts)}
        negative = {p: compile_negative(p, resolver) for p in dict.fromkeys(negatives)}
        sets = {_avatar_key(c.avatars) for c in positive.values()}
        if len(sets) > 1:
            raise InvalidRequest("all prompts of one request must call the same avatars", param="prompt")
        first = next(iter(positive.values()))
        avatars = list(first.avatars)
        seen = {(a.kind, a.digest) for a in avatars}
        for compiled in negative.values():
            for ref in compiled.avatars:
                if (ref.kind, ref.digest) not in seen:
                    seen.add((ref.kind, ref.digest))
                    avatars.append(ref)
        hires = spec.hires
        if hires is not None and (hires.prompt or hires.negative_prompt):
            hp = compile_prompt(hires.prompt, resolver) if hires.prompt else None
            hn = compile_negative(hires.negative_prompt, resolver) if hires.negative_prompt else None
            if hp is not None and hp.avatars and _avatar_key(hp.avatars) != _avatar_key(first.avatars):
                raise InvalidRequest("hr_prompt must call the same avatars as the prompt", param="hr_prompt")
            hires = replace(hires, prompt=hp.text if hp else "", negative_prompt=hn.text if hn else "")
        texts = PromptTexts(
            prompts=[positive[p].text for p in prompts],
            negatives=[negative[p].text for p in negatives],
            shown_prompts=shown,
            shown_negatives=shown_negatives,
        )
        spec = replace(spec, avatars=tuple(avatars), hires=hires)
        from pictale.service.families import check_job_family

        check_job_family(self, spec)  # avatars the model family cannot apply (a face on SD3): 422 now
        return spec, texts

    def resolve_seeds(self, spec: GenerationSpec) -> tuple[list[int], list[int]]:
        """A1111: -1 is random; image i uses seed+i (the subseed moves instead when a variation is asked)."""
        seed = spec.seed if spec.seed is not None and spec.seed >= 0 else random.randrange(SEED_MAX)
        subseed = spec.subseed if spec.subseed is not None and spec.subseed >= 0 else random.randrange(SEED_MAX)
        n = spec.total_images
        seeds = [seed + (i if spec.subseed_strength == 0 else 0) for i in range(n)]
        subseeds = [subseed + i for i in range(n)]
        return seeds, subseeds

    def _generate(self, spec: GenerationSpec, job: Job, texts: PromptTexts) -> Later:
        self._load_for(spec)
        job.check_cancelled()
        seeds, subseeds = self.resolve_seeds(spec)
        init_images, masks, overlay = prepare_images(spec, seeds)
        control = self._control(job, spec)
        # Avatar and extra-network tags stay in the infotext (as in A1111) but never reach the text encoder.
        out = self.engine.generate(spec, texts.prompts, texts.negatives, seeds, subseeds, control, init_images, masks)
        return self._result(spec, texts, out, overlay)

    def _generate_batch(self, jobs: list[Job]) -> list[Any]:
        return merging.run_merged(self, jobs)

    def _generate_stream(self, jobs: list[Job], admission: Any) -> None:
        merging.run_stream(self, jobs, admission)

    def _load_for(self, spec: GenerationSpec) -> None:
        # A per-request override loads its checkpoint for this job only; the next job without one goes
        # back to the configured checkpoint, as A1111 does.
        wanted = spec.model or self.options.get("sd_model_checkpoint")
        if wanted:
            self._ensure_loaded(self.catalog.find(wanted))

    def _control(self, job: Job, spec: GenerationSpec, on_cancelled=None):
        from pictale.engine.engine import RunControl

        def render(latents) -> str | None:
            make = getattr(self.engine, "previews", None)  # stand-in engines of tests may have none
            pngs = make(latents, spec.width, spec.height) if make is not None else []
            return pngs[0] if pngs else None

        live = LivePreviews(
            job,
            lambda: preview_every(job, self.settings.preview_every, self.options),
            render,
            self._regroup if job.batch is not None and job.batch.stream is None else None,
        )
        return RunControl(
            on_step=live.on_step,
            cancelled=lambda: job.cancelled,
            interrupted=lambda: job.interrupted,
            skipped=lambda: job.skipped,
            clear_skip=job.clear_skip,
            on_latents=live.on_latents,
            on_cancelled=on_cancelled,
            preview_every=live.every,
        )

    def _regroup(self, step: int, total: int) -> bool:
        """Early in a run (its first quarter), start over when compatible requests came in since it started."""
        return step <= max(1, total // 4) and self.queue.should_regroup()

    def _result(self, spec: GenerationSpec, texts: PromptTexts, out, overlay) -> Later:
        """Infotexts of an engine result (the same for a job alone or in a batch), and its images to encode off
        the worker (`Later`: the queue's finisher builds the GenerationResult while the next job runs)."""
        prompts, negatives = texts.shown_prompts, texts.shown_negatives
        images = out.images
        if overlay is not None:
            originals, soft, crop = overlay  # each output goes back over its own source image
            images = [overlay_result(originals[i], img, soft, crop) for i, img in enumerate(images)]
        model = self.engine.entry
        extra = dict(spec.extra.get("infotext_extra") or {})
        extra.update(getattr(out, "infotext", None) or {})  # the engine's notes (T5 tokens, sampler that ran)
        extra.update(distilled_infotext(self, spec))
        if spec.hires is not None:
            extra.update(hires_params(spec))
        extra.update(avatar_infotext(spec.avatars))
        if spec.mode is Mode.INPAINT:
            extra.update(
                {
                    "Mask blur": spec.mask_blur,
                    "Inpaint area": "Only masked" if spec.inpaint_full_res else None,
                    "Masked area padding": spec.inpaint_full_res_padding if spec.inpaint_full_res else None,
                    "Masked content": ["fill", "original", "latent noise", "latent nothing"][spec.inpainting_fill],
                }
            )
        infotexts = [
            make_infotext(prompts[i], negatives[i], infotext_params(spec, model, out.seeds[i], out.subseeds[i], extra))
            for i in range(len(images))
        ]
        result = GenerationResult(
            spec=spec,
            images=[],
            pil_images=images,
            infotexts=infotexts,
            prompts=prompts[: len(images)],
            negative_prompts=negatives[: len(images)],
            seeds=out.seeds,
            subseeds=out.subseeds,
            model=model,
            interrupted=out.interrupted,
            extra_params={k: v for k, v in extra.items() if v is not None},
        )
        fmt = str(self.options.get("samples_format") or "png").lower()
        pnginfo = bool(self.options.get("enable_pnginfo", True))
        return encode_later(result, fmt, pnginfo, self.settings.png_compress_level)


def _per_image(values: list[str], n: int) -> list[str]:
    if len(values) not in (1, n):
        raise InvalidRequest(f"{len(values)} prompts given for {n} images", param="prompt")
    return [values[i % len(values)] for i in range(n)]


def _avatar_key(avatars) -> tuple:
    return tuple((a.kind, a.digest, a.weight) for a in avatars)
