"""One run of a book on its own thread: plan the pages, generate N candidates each, score them, choose.

Everything a run learns is saved in the book's document as soon as it is known (the story, the pages, each
page's prompt, each scored candidate, each choice), so a run that stops (server shutdown, crash) resumes at
the first page that has no choice yet and keeps what was done. Generation goes through the one
GenerationService queue like any client; the next pages' first candidates (one page per queue worker) are
queued before the current page is scored, so no worker waits for the scoring.
"""

from __future__ import annotations

import io
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image
from tenacity import Retrying, retry_if_exception_type, stop_any, stop_when_event_set, wait_fixed

from pictale.core.errors import InvalidRequest, JobCancelled, QueueFull
from pictale.core.limits import SEED_MAX
from pictale.core.types import AvatarKind, Character, GenerationSpec
from pictale.jobs.queue import Job
from pictale.prompt.grammar import scan
from pictale.service.families import job_variant
from pictale.service.generation import GenerationService
from pictale.service.scoring import ScorerHolder
from pictale.storage.blobs import BlobStore
from pictale.storage.books import BookStore
from pictale.storage.infotext import encode_png
from pictale.story import planner, ranking, references

log = logging.getLogger(__name__)

SEED_STRIDE = 1000
"""Candidate k of page p (from 1) gets seed base + (p - 1) * SEED_STRIDE + k: reproducible, never shared."""
REFERENCE_KINDS = (AvatarKind.FACE, AvatarKind.STYLE)


class Stopping(Exception):
    """The server is stopping: leave the book "running" so the next start resumes it."""


@dataclass
class RunContext:
    """What one run needs besides the book itself."""

    service: GenerationService
    store: BookStore
    images: BlobStore
    scorer: ScorerHolder
    llm: Any
    characters: Callable[[str, str], Character | None]
    stop: threading.Event
    features: dict[str, list[float]] = field(default_factory=dict)
    """Image embeddings by blob digest (chosen images of earlier pages are references)."""


class BookRun:
    """Runs one book to the end (or until cancelled / stopped); `job` carries progress and cancel."""

    def __init__(self, ctx: RunContext, book: dict, job: Job) -> None:
        self.ctx = ctx
        self.book = book
        self.id = book["id"]
        self.owner = book["owner"]
        self.req = book["request"]
        self.doc = book["document"]
        self.job = job
        self.pending: dict[int, tuple[Job, list[int]]] = {}
        self.chars: dict[str, Character] = {}
        self.kontext = False
        """Pages with a character reference are Kontext edits of it (`story.references`)."""

    # -- the whole run -------------------------------------------------------------------------------
    def run(self) -> dict:
        llm = self.ctx.llm
        chars = self.chars = self._characters()
        if not self.doc.get("story"):
            self.doc["story"] = planner.write_story(
                self.req["keywords"],
                reading_level=self.req["reading_level"],
                pages=self.req.get("pages") or self.req["length"],
                characters=list(chars.values()),
                llm=llm,
            )
            self.doc["story_source"] = "llm"
            self._save()
        if not self.doc.get("pages"):
            texts = planner.split_pages(self.doc["story"], self.req.get("pages"), llm)
            self.doc["pages"] = [_new_page(i + 1, text) for i, text in enumerate(texts)]
            self._save()
        self._plan(chars)
        self.doc["character_references"] = self._reference_mode()
        self.kontext = self.doc["character_references"] == "kontext"
        scorer = self.ctx.scorer.get()
        self.doc["scoring"] = "clip" if scorer is not None else f"unavailable: {self.ctx.scorer.error}"
        self._generate(scorer, chars)
        return self.doc

    def _reference_mode(self) -> str:
        """The book's `character_references` state: "kontext" (pages with a character reference are edits of
        it), "off", or why they are not used."""
        if not self.req.get("character_references", True):
            return "off"
        spec = page_spec(self.req, "", self.req["seed"], 1)
        if job_variant(self.ctx.service, spec) == "kontext":
            return "kontext"
        return "unavailable: the model is not FLUX.1 Kontext (references are scored, not used)"

    def _characters(self) -> dict[str, Character]:
        out = {}
        for name in self.req.get("characters", []):
            ch = self.ctx.characters(self.owner, name)
            if ch is None:
                raise InvalidRequest(f"unknown character {name!r}", param="characters")
            out[ch.name.lower()] = ch
        return out

    def _plan(self, chars: dict[str, Character]) -> None:
        pages = self.doc["pages"]
        for i, page in enumerate(pages):
            if page.get("prompt") is not None:
                continue
            self._check()
            before = [p["text"] for p in pages[:i]]
            plan = planner.plan_page(page["text"], before, list(chars.values()), self.ctx.llm)
            names = [n for n in plan.characters if n.lower() in chars]
            page["characters"] = names
            page["scene"] = plan.prompt
            page["prompt"] = planner.compose_prompt(self.req.get("style", ""), names, plan.prompt)
            page["plan_source"] = plan.source
            page["plan_error"] = plan.error
            self._save()
            self.job.events.emit("page", page=page["number"], state="planned", prompt=page["prompt"])

    # -- generation and choice -------------------------------------------------------------------------
    def _generate(self, scorer: Any, chars: dict[str, Character]) -> None:
        todo = [p for p in self.doc["pages"] if p.get("chosen") is None]
        total = sum(self._wanted(p) for p in todo)
        self.done_images, self.total_images = 0, max(1, total)
        # Pages queued ahead of the current one: one keeps a lone worker busy while this page is scored; with
        # N workers, N pages' rounds run at once. Results are still taken and chosen page by page.
        ahead = max(1, self.ctx.service.queue.workers)
        for k, page in enumerate(todo):
            if self._wants_more(page):  # a resumed page may have all its candidates already
                self._submit_round(page)
            for later in todo[k + 1 : k + 1 + ahead]:
                # not a page whose reference is the choice of a page before it that is not chosen yet
                if self._wants_more(later) and not (self.kontext and self._reference(later) == references.PENDING):
                    self._submit_round(later)
            while page["number"] in self.pending:
                job, seeds = self.pending.pop(page["number"])
                result = self._wait(job, len(seeds))
                self._add_candidates(page, result, seeds, scorer, chars)
                if self._wants_more(page):
                    self._submit_round(page)
            self._choose(page)

    def _wanted(self, page: dict) -> int:
        return max(0, self.req["candidates"] - len(page.get("candidates", [])))

    def _wants_more(self, page: dict) -> bool:
        cands = page["candidates"]
        if len(cands) < self.req["candidates"]:
            return True
        threshold = self.req.get("threshold")
        if threshold is None or len(cands) >= self.req["max_candidates"]:
            return False
        best = max((c["scores"]["total"] for c in cands if c.get("scores")), default=None)
        return best is not None and best < threshold

    def _submit_round(self, page: dict) -> None:
        if page["number"] in self.pending:
            return
        have = len(page["candidates"])
        count = self.req["candidates"] - have if have < self.req["candidates"] else self.req["candidates"]
        count = max(1, min(count, self.req["max_candidates"] - have))
        base = page.get("seed_base")
        if base is None:
            base = (self.req["seed"] + (page["number"] - 1) * SEED_STRIDE) % SEED_MAX
        seeds = [(base + have + i) % SEED_MAX for i in range(count)]
        spec = page_spec(self.req, page["prompt"], seeds[0], count, {"Book": self.id, "Page": page["number"]})
        ref = self._reference(page) if self.kontext else None
        if isinstance(ref, dict) and ref["used"]:
            spec = self._edit(spec, ref)
        job = self._queued(lambda: self.ctx.service.submit(spec, owner=self.owner, meta={"book": self.id}))
        self.pending[page["number"]] = (job, seeds)

    def _reference(self, page: dict) -> dict | str | None:
        """The page's character reference (found once, then kept in the page), PENDING, or None."""
        kept = page.get("reference")
        if "reference" in page and (not isinstance(kept, dict) or kept["used"] == self.kontext or page["candidates"]):
            return kept
        ref = references.find(page, self.doc["pages"], self.chars, self.ctx.service.avatars, self.owner)
        if ref == references.PENDING:
            return ref
        if isinstance(ref, dict):
            ref["used"] = self.kontext
            if self.kontext:
                ch = self.chars[ref["character"].lower()]
                ref["strength"] = self.req.get("reference_strength", 1.0)
                ref["prompt"] = references.edit_prompt(page["prompt"], ch)
        page["reference"] = ref
        return ref

    def _edit(self, spec: GenerationSpec, ref: dict) -> GenerationSpec:
        """A round of a page as a Kontext edit of its reference (img2img: the reference is the init image)."""
        image = references.load(ref, self.ctx.service.avatars, self.owner, self.ctx.images)
        where = f"avatar {ref['avatar']}" if ref["source"] == "avatar" else f"page {ref['page']}"
        extra = {"infotext_extra": {**spec.extra["infotext_extra"], "Reference": f"{ref['character']} ({where})"}}
        return replace(
            spec,
            prompt=ref["prompt"],
            init_images=(image,),
            denoising_strength=ref["strength"],
            resize_mode=references.RESIZE_AND_FILL,
            extra=extra,
        )

    def _queued(self, submit: Callable[[], Job]) -> Job:
        """Submit to the shared queue, waiting while it is full (other clients come first)."""
        retry = Retrying(
            retry=retry_if_exception_type(QueueFull),
            wait=wait_fixed(0.25),
            stop=stop_any(stop_when_event_set(self.ctx.stop)),
            reraise=True,
        )
        for attempt in retry:
            with attempt:
                return submit()
        raise Stopping("the server is stopping")

    def _on_worker(self, fn: Callable[[], Any]) -> Any:
        """Run torch work (CLIP) on the generation worker: a second torch thread slows the worker down."""
        job = self._queued(lambda: self.ctx.service.on_worker(fn, kind="score"))
        while True:
            try:
                self._check()
                return job.future.result(timeout=0.1)
            except TimeoutError:
                continue
            except BaseException:
                job.cancel()
                raise

    def _wait(self, gen: Job, count: int) -> Any:
        """The generation's result; the book job's progress follows its steps; cancel and stop reach it."""
        steps = max(1, self.req["steps"])
        reported = -1
        while True:
            if self.job.cancelled or self.ctx.stop.is_set():
                self._cancel_pending(gen)
                self._check()
            try:
                return gen.future.result(timeout=0.1)
            except TimeoutError:
                done = self.done_images * steps + min(gen.progress.step, steps) * count
                if done != reported:  # an event per new step, not per poll: the job's event log is kept
                    self.job.report(done, self.total_images * steps)
                    reported = done

    def _cancel_pending(self, current: Job | None = None) -> None:
        for job, _ in list(self.pending.values()):
            job.cancel()
        if current is not None:
            current.cancel()

    def _add_candidates(self, page: dict, result: Any, seeds: list[int], scorer: Any, chars) -> None:
        scores: list[ranking.Scores | None] = [None] * len(result.images)
        feats: list[list[float]] = []
        if scorer is not None:
            ref = self._reference(page)  # earlier pages are chosen now
            ref = ref if isinstance(ref, dict) else None
            scores, feats = self._on_worker(lambda: self._score(page, result.pixels(), scorer, chars, ref))
        for i, pil in enumerate(result.pixels()):
            s = scores[i]
            infotext = result.infotexts[i]
            if s is not None:
                infotext += "".join(f", {k}: {v}" for k, v in s.infotext().items())
            data = encode_png(pil, infotext)
            staged = self.ctx.images.stage_bytes(data)
            self.ctx.images.commit(staged)
            if feats:
                self.ctx.features[staged.digest] = feats[i]
            page["candidates"].append(
                {
                    "index": len(page["candidates"]),
                    "seed": result.seeds[i] if i < len(result.seeds) else seeds[i],
                    "digest": staged.digest,
                    "scores": s.as_dict() if s is not None else None,
                }
            )
            self.done_images += 1
        self._save()
        self.job.report(self.done_images * self.req["steps"], self.total_images * self.req["steps"])

    def _score(self, page: dict, images: list, scorer: Any, chars, ref) -> tuple[list[ranking.Scores], list]:
        """CLIP features of the page text, its candidates and their references, and the candidates' scores."""
        text = scorer.text_features([page["text"]])[0]
        feats = scorer.image_features(images)
        refs = self._references(page, scorer, chars)
        w_t, w_i = self.req["clip_t_weight"], self.req["clip_i_weight"]
        scores = [ranking.score(f, text, refs, w_t, w_i) for f in feats]
        if ref is not None:  # CLIP-I against the character reference, used or not (for comparison)
            vec = self._reference_features(ref, scorer)
            scores = [replace(s, clip_i_ref=ranking.cosine(f, vec)) for s, f in zip(scores, feats, strict=True)]
        return scores, feats

    def _reference_features(self, ref: dict, scorer: Any) -> list[float]:
        key = references.feature_key(ref)
        if key not in self.ctx.features:
            image = references.load(ref, self.ctx.service.avatars, self.owner, self.ctx.images)
            self.ctx.features[key] = scorer.image_features([image])[0]
        return self.ctx.features[key]

    def _references(self, page: dict, scorer: Any, chars: dict[str, Character]) -> list[list[float]]:
        """Reference embeddings: avatar images of the page's characters and earlier chosen pages (see ranking)."""
        names = {n.lower() for n in page.get("characters", [])}
        refs: list[list[float]] = []
        for name in sorted(names):
            ch = chars.get(name)
            if ch is not None:
                refs += self._avatar_features(ch, scorer)
        for other in self.doc["pages"]:
            if other["number"] >= page["number"] or other.get("chosen") is None:
                continue
            if names and not names & {n.lower() for n in other.get("characters", [])}:
                continue
            digest = other["candidates"][other["chosen"]]["digest"]
            refs.append(self._features(digest, scorer))
        return refs

    def _avatar_features(self, ch: Character, scorer: Any) -> list[list[float]]:
        registry = self.ctx.service.avatars
        tokens, _errors = scan(ch.avatars or "")
        out = []
        for token in tokens:
            if registry is None or token.kind not in REFERENCE_KINDS:
                continue
            ref = registry.resolve(self.owner, token.kind, token.name, 1.0)
            for path in ref.files if ref is not None else ():
                key = f"avatar:{ref.digest}:{path.name}"
                if key not in self.ctx.features:
                    with Image.open(path) as im:
                        self.ctx.features[key] = scorer.image_features([im.convert("RGB")])[0]
                out.append(self.ctx.features[key])
        return out

    def _features(self, digest: str, scorer: Any) -> list[float]:
        if digest not in self.ctx.features:
            with Image.open(io.BytesIO(self.ctx.images.path(digest).read_bytes())) as im:
                self.ctx.features[digest] = scorer.image_features([im.convert("RGB")])[0]
        return self.ctx.features[digest]

    def _choose(self, page: dict) -> None:
        cands = page["candidates"]
        if all(c.get("scores") for c in cands):
            chosen, by = ranking.best([ranking.Scores(**c["scores"]) for c in cands]), "score"
        else:
            chosen, by = 0, "first"  # no scorer: the first candidate (the page's own seed)
        page["chosen"], page["chosen_by"] = chosen, by
        page.pop("seed_base", None)
        self._save()
        self.job.events.emit(
            "page", page=page["number"], state="chosen", chosen=chosen, scores=cands[chosen].get("scores")
        )

    # -- helpers ---------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.ctx.stop.is_set():
            raise Stopping("the server is stopping")
        if self.job.cancelled:
            raise JobCancelled("the book was cancelled")

    def _save(self) -> None:
        self.ctx.store.save(self.id, document=self.doc)


def _new_page(number: int, text: str) -> dict:
    return {"number": number, "text": text, "prompt": None, "characters": [], "candidates": [], "chosen": None}


def page_spec(req: dict[str, Any], prompt: str, seed: int, count: int, infotext: dict | None = None) -> GenerationSpec:
    """One round of a page's candidates as a generation (also what a new book is checked with up front)."""
    return GenerationSpec(
        prompt=prompt,
        negative_prompt=req.get("negative_prompt", ""),
        seed=seed,
        steps=req["steps"],
        cfg_scale=req["cfg_scale"],
        distilled_cfg_scale=req.get("distilled_cfg_scale"),
        width=req["width"],
        height=req["height"],
        sampler=req["sampler"],
        scheduler=req.get("scheduler", "automatic"),
        batch_size=count,
        model=req.get("model"),
        extra={"infotext_extra": infotext or {}},
    )


def new_seed() -> int:
    return random.randrange(SEED_MAX)
