"""Picture books: create, follow, regenerate a page, resume, export. Each run is a job on its own thread.

A book's job has the book's id, so `GET /v1/jobs/{book id}` and its SSE events follow the newest run (the
job API's usual `step` events, plus `page` events when a page is planned or chosen). The worker thread is
never blocked by a book: a run submits ordinary generation jobs to the queue and waits for them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from pictale.core.errors import BookBusy, BookNotFound, InvalidRequest, JobCancelled, PictaleError
from pictale.core.types import Character
from pictale.jobs.queue import Job
from pictale.service.generation import GenerationService
from pictale.service.scoring import ScorerHolder
from pictale.storage.blobs import BlobStore
from pictale.storage.books import BookStore
from pictale.story import export, planner
from pictale.story.book_run import BookRun, RunContext, Stopping, new_seed, page_spec
from pictale.story.book_views import book_view

log = logging.getLogger(__name__)


class BookRunner:
    """Owns the book threads of one server (or CLI) process."""

    def __init__(
        self,
        service: GenerationService,
        store: BookStore,
        images: BlobStore,
        scorer: ScorerHolder,
        characters: Callable[[str, str], Character | None],
        llm: Callable[[], Any] | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.images = images
        self.scorer = scorer
        self.characters = characters
        self.llm = llm or (lambda: None)
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._features: dict[str, list[float]] = {}

    # -- entry points --------------------------------------------------------------------------------
    def create(self, owner: str, request: dict[str, Any], base_url: str = "") -> dict:
        """Check the request (characters exist, story or keywords), save the book and start its job."""
        for name in request.get("characters", []):
            if self.characters(owner, name) is None:
                raise InvalidRequest(
                    f"unknown character {name!r}: create it with POST /v1/characters", param="characters"
                )
        request = dict(request)
        if request.get("seed", -1) < 0:
            request["seed"] = new_seed()
        names = request.get("characters", [])
        self.check_prompt(owner, request, planner.compose_prompt(request.get("style", ""), names, "scene"))
        story = (request.get("story") or "").strip()
        if not story and not self.service.settings.llm_base_url:
            raise planner.story_needs_llm()
        document: dict[str, Any] = {"story": story or None, "story_source": "given" if story else None, "pages": []}
        if story:
            document["pages"] = [
                _page(i + 1, t) for i, t in enumerate(planner.split_pages(story, request.get("pages"), None))
            ]
        title = request.get("title") or _title(story or request.get("keywords", ""))
        book_id = uuid.uuid4().hex
        self.store.create(book_id, owner, title, request, document)
        self._start(book_id)
        return self.get(owner, book_id, base_url)

    def regenerate(
        self, owner: str, book_id: str, number: int, *, seed: int | None, prompt: str | None, base_url: str = ""
    ) -> dict:
        """Redo one page with a new seed and/or an edited prompt; the other pages stay as they are."""
        book = self._own(owner, book_id)
        self._idle(book)
        pages = book["document"].get("pages", [])
        if not 1 <= number <= len(pages):
            raise InvalidRequest(f"page {number} does not exist: the book has {len(pages)} pages", param="page")
        page = pages[number - 1]
        if prompt is not None:
            if not prompt.strip():
                raise InvalidRequest("prompt must not be empty", param="prompt")
            self.check_prompt(owner, book["request"], prompt)
            page["prompt"], page["plan_source"] = prompt, "edited"
        page["seed_base"] = seed if seed is not None and seed >= 0 else new_seed()
        page["candidates"], page["chosen"] = [], None
        page.pop("chosen_by", None)  # the new candidates are chosen by score again
        page.pop("reference", None)  # found again: an earlier page may have a new image
        self.store.save(book_id, document=book["document"], state="queued", error=None)
        self._start(book_id)
        return self.get(owner, book_id, base_url)

    def choose(self, owner: str, book_id: str, number: int, candidate: int, base_url: str = "") -> dict:
        """Show candidate `candidate` of a finished page instead of the best-scored one (saved; a later
        regenerate of the page chooses by score again)."""
        book = self._own(owner, book_id)
        self._idle(book)  # a run saves the whole document: a choice made meanwhile would be lost
        pages = book["document"].get("pages", [])
        if not 1 <= number <= len(pages):
            raise BookNotFound(f"page {number} does not exist: the book has {len(pages)} pages", param="page")
        page = pages[number - 1]
        cands = page.get("candidates", [])
        if page.get("chosen") is None:
            raise BookBusy(
                f"page {number} is not finished yet ({len(cands)} candidates, none chosen): "
                "wait for the book, or resume it",
                param="page",
            )
        if not 0 <= candidate < len(cands):
            raise InvalidRequest(
                f"candidate {candidate} does not exist: page {number} has candidates 0 to {len(cands) - 1}",
                param="candidate",
            )
        page["chosen"], page["chosen_by"] = candidate, "user"
        self.store.save(book_id, document=book["document"])
        return self.get(owner, book_id, base_url)

    def check_prompt(self, owner: str, request: dict[str, Any], prompt: str) -> None:
        """What a page job would be refused for (steps, size, seed, lengths, avatars, characters): a 4xx now,
        before the book is accepted, never a failed book later."""
        # a round makes at most `candidates` images (more rounds follow for a threshold)
        spec = self.service.normalize(page_spec(request, prompt, request["seed"], request["candidates"]))
        self.service.compile(spec, owner)

    def resume(self, owner: str, book_id: str, base_url: str = "") -> dict:
        """Go on with a cancelled or failed book from its first unfinished page."""
        book = self._own(owner, book_id)
        self._idle(book)
        if book["state"] == "done":
            raise BookBusy("the book is finished; regenerate a page instead", param="book")
        self.store.save(book_id, state="queued", error=None)
        self._start(book_id)
        return self.get(owner, book_id, base_url)

    def resume_all(self) -> list[str]:
        """At start-up: books a stopped server left queued or running go on where they were."""
        ids = [b["id"] for b in self.store.active()]
        for book_id in ids:
            self._start(book_id)
        if ids:
            log.info("resuming %d unfinished book(s)", len(ids))
        return ids

    def get(self, owner: str, book_id: str, base_url: str = "") -> dict:
        return book_view(self._own(owner, book_id), base_url)

    def list(self, owner: str, base_url: str = "") -> list[dict]:
        return [book_view(b, base_url, with_pages=False) for b in self.store.list(owner)]

    def delete(self, owner: str, book_id: str) -> None:
        """Cancel a running book, then delete it (its images go with the next blob collection)."""
        self._own(owner, book_id)
        job = self.service.queue.get(book_id)
        if job is not None and job.finished is None:
            job.cancel()
        thread = self._threads.get(book_id)
        if thread is not None:
            thread.join(30)
        self.store.delete(book_id)

    def image(self, owner: str, book_id: str, number: int, index: int | None = None) -> bytes:
        """PNG bytes of a page's chosen image, or of candidate `index`."""
        book = self._own(owner, book_id)
        pages = book["document"].get("pages", [])
        if not 1 <= number <= len(pages):
            raise BookNotFound(f"page {number} does not exist in book {book_id}", param="page")
        page = pages[number - 1]
        index = page.get("chosen") if index is None else index
        if index is None or not 0 <= index < len(page.get("candidates", [])):
            raise BookNotFound(f"page {number} has no image {'yet' if index is None else index}", param="page")
        return self.images.path(page["candidates"][index]["digest"]).read_bytes()

    def export(self, owner: str, book_id: str, fmt: str, *, scores: bool = False) -> bytes:
        """The finished book as PDF or HTML bytes; each page with its text, chosen image and, on request, scores."""
        book = self._own(owner, book_id)
        pages = book["document"].get("pages", [])
        ready = [p for p in pages if p.get("chosen") is not None]
        if not pages or len(ready) < len(pages):
            raise BookBusy(f"the book is not finished: {len(ready)} of {len(pages)} pages have an image", param="book")
        out = export.ExportBook(
            title=book["title"],
            pages=tuple(
                export.ExportPage(
                    number=p["number"],
                    text=p["text"],
                    image=self.images.path(p["candidates"][p["chosen"]]["digest"]).read_bytes(),
                    prompt=p["prompt"],
                    seed=p["candidates"][p["chosen"]]["seed"],
                    scores=_numbers(p["candidates"][p["chosen"]].get("scores")),
                )
                for p in pages
            ),
            show_scores=scores,
        )
        if fmt == "pdf":
            return export.render_pdf(out)
        if fmt == "html":
            return export.render_html(out).encode("utf-8")
        raise InvalidRequest(f"unknown export format {fmt!r}: use pdf or html", param="format")

    def stop(self, timeout: float = 30.0) -> None:
        """Server shutdown: runs stop between two steps and stay "running" in the database (resumed at start)."""
        self._stop.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def wait(self, book_id: str, timeout: float | None = None) -> None:
        thread = self._threads.get(book_id)
        if thread is not None:
            thread.join(timeout)

    # -- runs ------------------------------------------------------------------------------------------
    def _own(self, owner: str, book_id: str) -> dict:
        book = self.store.get(book_id, owner)
        if book is None:
            raise BookNotFound(f"no book {book_id!r}", param="book_id")
        return book

    def _idle(self, book: dict) -> None:
        thread = self._threads.get(book["id"])
        if thread is not None and thread.is_alive():
            raise BookBusy("the book is being made; wait for its job or cancel it (DELETE /v1/jobs/{id})")

    def _start(self, book_id: str) -> None:
        book = self.store.get(book_id)
        job = Job(work=lambda job: None, kind="book", owner=book["owner"], id=book_id, meta={"book": book_id})
        self.service.queue.track(job)
        self.store.save(book_id, state="running")
        thread = threading.Thread(
            target=self._run, args=(book_id, job), name=f"pictale-book-{book_id[:8]}", daemon=True
        )
        with self._lock:
            self._threads[book_id] = thread
        thread.start()

    def _run(self, book_id: str, job: Job) -> None:
        book = self.store.get(book_id)
        ctx = RunContext(
            service=self.service,
            store=self.store,
            images=self.images,
            scorer=self.scorer,
            llm=self.llm(),
            characters=self.characters,
            stop=self._stop,
            features=self._features,
        )
        run = BookRun(ctx, book, job)
        try:
            run.run()
        except Stopping:
            job._end(JobCancelled("the server is stopping; the book resumes at the next start"))
            return
        except JobCancelled as exc:
            run._cancel_pending()
            self.store.save(book_id, state="cancelled", error=None)
            job._end(exc)
            return
        except Exception as exc:  # the book fails, the server goes on
            if not isinstance(exc, PictaleError):
                log.exception("book %s failed", book_id)
            run._cancel_pending()
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.store.save(book_id, state="failed", error=message)
            job._end(exc)
            return
        self.store.save(book_id, state="done", error=None)
        job._end(book_view(self.store.get(book_id), ""))


def _page(number: int, text: str) -> dict:
    return {"number": number, "text": text, "prompt": None, "characters": [], "candidates": [], "chosen": None}


def _title(text: str) -> str:
    words = text.split()
    return " ".join(words[:8]) + ("…" if len(words) > 8 else "") if words else "Untitled"


def _numbers(scores: dict | None) -> dict[str, float] | None:
    if not scores:
        return None
    return {k: v for k, v in scores.items() if v is not None}
