"""The story pieces of one process (server or CLI), built from Settings like the stores are."""

from __future__ import annotations

import threading
from typing import Any

from pictale.engine.demo.layout import is_tiny
from pictale.service.generation import GenerationService
from pictale.service.scoring import ScorerHolder
from pictale.storage.blobs import BlobStore
from pictale.storage.books import BookStore
from pictale.storage.db import Database
from pictale.story.books import BookRunner
from pictale.story.llm import StoryLLM, make_llm


class LLMHolder:
    """The configured story LLM, made once (it may ask the endpoint for its model name); call it to get it."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._llm: StoryLLM | None = None
        self._made = False
        self._lock = threading.Lock()

    def __call__(self) -> StoryLLM | None:
        with self._lock:
            if not self._made:
                self._llm = make_llm(self.settings)
                self._made = True
            return self._llm


def book_images(settings: Any) -> BlobStore:
    """Book images live in their own blob store: the avatar collector must never see them as garbage."""
    return BlobStore(settings.data_dir / "book-images")


def make_book_runner(service: GenerationService, db: Database, llm: LLMHolder | None = None) -> BookRunner:
    settings = service.settings

    def character(owner: str, name: str):
        return service.characters.get(owner, name) if service.characters is not None else None

    llm = llm or LLMHolder(settings)

    def demo() -> bool:  # tiny models pair with the tiny CLIP (known by what they are, not by their names)
        return is_tiny(service.current_model)

    return BookRunner(
        service,
        BookStore(db),
        book_images(settings),
        ScorerHolder(settings, demo, getattr(service, "scorer_factory", None)),
        character,
        llm,
    )


def collect_book_images(runner: BookRunner) -> list[str]:
    """Remove images of deleted books (at start-up, before any book runs)."""
    with runner.images.collecting(blocking=False) as locked:
        if not locked:
            return []
        return runner.images.collect(runner.store.digests())
