"""Books fan out over the queue's workers: with N workers, N pages ahead of the current one are queued, so
their rounds run at once; the book (candidates, seeds, images, scores, choices) is the same whatever the worker
count, and a Kontext page whose reference is an earlier page's choice still waits for that choice.

A BookRun is driven directly through a stand-in service: a real JobQueue with 1 or 2 workers in front of a
stand-in engine that draws each image from its seed and prompt (and its reference image, for an edit) and
records every round; a stand-in CLIP scores by colour. No model, no database."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from PIL import Image

from pictale.core.types import Character, GenerationSpec
from pictale.jobs.queue import Job, JobQueue
from pictale.storage.blobs import BlobStore
from pictale.story.book_run import BookRun, RunContext

WAIT = 5.0
SASHA = Character(name="sasha", description="a girl with red hair")
TEXTS = [
    ("The park was quiet in the morning.", []),
    ("Sasha found a red kite.", ["sasha"]),
    ("Sasha ran after the kite.", ["sasha"]),
    ("Sasha laughed in the sun.", ["sasha"]),
    ("The wind went to sleep.", []),
]
"""Page 2 is where Sasha first appears: with Kontext, pages 3 and 4 are edits of its chosen image."""
REQUEST = {
    "seed": 7,
    "steps": 2,
    "cfg_scale": 5.0,
    "width": 64,
    "height": 64,
    "sampler": "Euler",
    "candidates": 3,
    "max_candidates": 4,
    "threshold": 0.999,  # never reached: every page gets a second round of one image
    "clip_t_weight": 1.0,
    "clip_i_weight": 1.0,
    "reference_strength": 1.0,
}


@dataclass
class Drawn:
    """What a generation result is to a book: images, their seeds and infotexts."""

    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]

    def pixels(self) -> list[Image.Image]:
        return self.images


def pixels_key(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def colour(*parts: object) -> tuple[int, int, int]:
    rnd = random.Random(hashlib.sha256(repr(parts).encode()).digest())
    return rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)


class StandInService:
    """What a BookRun asks of the GenerationService, over a real queue with `workers` threads."""

    def __init__(self, workers: int, *, kontext: bool, overlap: bool) -> None:
        self.queue = JobQueue(16, workers=workers)
        self.avatars = None
        entry = SimpleNamespace(family="flux", filename="model.safetensors")
        self.options = {"sd_model_checkpoint": "model"}
        self.catalog = SimpleNamespace(find=lambda name: entry)
        self.current_model = entry
        self.engine = SimpleNamespace(family="flux", flux_variant="kontext" if kontext else "dev")
        self.doc: dict = {}
        self.submits: list[tuple[int, int]] = []
        """(page, pages chosen by then) per round submitted."""
        self.rounds: list[dict] = []
        self.wait_for_overlap = overlap
        """The first round waits (at most WAIT s) until another one runs beside it."""
        self.two_at_once = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0

    def submit(self, spec: GenerationSpec, *, owner: str | None = None, meta: dict | None = None) -> Job:
        page = spec.extra["infotext_extra"]["Page"]
        self.submits.append((page, sum(p["chosen"] is not None for p in self.doc["pages"])))
        return self.queue.submit(Job(work=lambda job: self._draw(spec, page), owner=owner, meta=meta or {}))

    def on_worker(self, fn, *, kind: str = "task") -> Job:
        return self.queue.submit(Job(work=lambda job: fn(), kind=kind))

    def _draw(self, spec: GenerationSpec, page: int) -> Drawn:
        with self._lock:
            first = not self.rounds and self._in_flight == 0
            self._in_flight += 1
            if self._in_flight >= 2:
                self.two_at_once.set()
        start = time.monotonic()
        try:
            if first and self.wait_for_overlap:
                self.two_at_once.wait(WAIT)  # a timeout, not a hang, when rounds do not overlap
            time.sleep(0.01)
            init = pixels_key(spec.init_images[0]) if spec.init_images else None
            seeds = [spec.seed + i for i in range(spec.batch_size)]
            images = [Image.new("RGB", (8, 8), colour(s, spec.prompt, init)) for s in seeds]
        finally:
            with self._lock:
                self._in_flight -= 1
        self.rounds.append({"page": page, "seeds": seeds, "init": init, "start": start, "end": time.monotonic()})
        return Drawn(images, seeds, [f"page {page}, seed {s}" for s in seeds])


class StandInClip:
    """Scores by colour: an image's vector is its mean colour, a text's a colour of its own (unit vectors)."""

    @staticmethod
    def _unit(v: list[float]) -> list[float]:
        n = sum(x * x for x in v) ** 0.5
        return [x / n for x in v]

    def text_features(self, texts: list[str]) -> list[list[float]]:
        return [self._unit([*colour(t), 64.0]) for t in texts]

    def image_features(self, images: list[Image.Image]) -> list[list[float]]:
        return [self._unit([*(float(c) for c in im.convert("RGB").getpixel((0, 0))), 64.0]) for im in images]


def make_book(tmp_path, workers: int, *, kontext: bool, overlap: bool = False):
    service = StandInService(workers, kontext=kontext, overlap=overlap)
    pages = [
        {"number": i + 1, "text": t, "prompt": f"picture book, {t}", "characters": c, "candidates": [], "chosen": None}
        for i, (t, c) in enumerate(TEXTS)
    ]
    doc = service.doc = {"story": "\n\n".join(t for t, _ in TEXTS), "pages": pages}
    request = {**REQUEST, "characters": ["sasha"], "character_references": kontext}
    book = {"id": "book", "owner": "a", "request": request, "document": doc}
    images = BlobStore(tmp_path / f"blobs-{workers}")
    ctx = RunContext(
        service=service,
        store=SimpleNamespace(save=lambda book_id, **fields: None),
        images=images,
        scorer=SimpleNamespace(get=StandInClip, error=None),
        llm=None,
        characters=lambda owner, name: SASHA if name == "sasha" else None,
        stop=threading.Event(),
    )
    service.queue.start()
    try:
        BookRun(ctx, book, Job(work=lambda job: None, kind="book")).run()
    finally:
        service.queue.stop()
    return doc, service, images


def outcome(doc: dict) -> list[dict]:
    keep = ("candidates", "chosen", "chosen_by", "reference")
    return [{k: p.get(k) for k in keep} for p in doc["pages"]]


@pytest.mark.parametrize("kontext", [False, True], ids=["plain", "kontext"])
def test_a_book_is_the_same_with_one_or_two_workers_and_two_pages_run_at_once(tmp_path, kontext):
    one, lone, _ = make_book(tmp_path, 1, kontext=kontext)
    two, pair, images = make_book(tmp_path, 2, kontext=kontext, overlap=True)
    assert outcome(two) == outcome(one)
    for page in two["pages"]:
        seeds = [c["seed"] for c in page["candidates"]]
        assert seeds == [7 + (page["number"] - 1) * 1000 + k for k in range(4)]  # 3, then a round of one
        assert len({c["digest"] for c in page["candidates"]}) == 4 and page["chosen_by"] == "score"
    key = lambda r: (r["page"], r["seeds"][0])  # noqa: E731
    assert sorted((key(r), r["init"]) for r in pair.rounds) == sorted((key(r), r["init"]) for r in lone.rounds)

    # one worker: today's look-ahead, one page past the current one; two workers: two pages past it
    assert max(page - chosen - 1 for page, chosen in lone.submits) == 1
    assert max(page - chosen - 1 for page, chosen in pair.submits) == 2
    assert pair.two_at_once.is_set()
    overlapping = [
        (a["page"], b["page"])
        for a in pair.rounds
        for b in pair.rounds
        if a["page"] < b["page"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "no two pages' rounds ran at the same time"
    assert lone.two_at_once.is_set() is False  # one worker never runs two rounds at once

    # Kontext: pages 3 and 4 are edits of page 2's choice, so they were never queued before it was made
    page2 = two["pages"][1]
    chosen2 = pixels_key(Image.open(images.path(page2["candidates"][page2["chosen"]]["digest"])))
    for service in (lone, pair):
        for r in service.rounds:
            assert r["init"] == (chosen2 if kontext and r["page"] in (3, 4) else None)
        if kontext:
            assert all(chosen >= 2 for page, chosen in service.submits if page in (3, 4))
