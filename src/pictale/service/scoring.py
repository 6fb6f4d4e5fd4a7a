"""The CLIP scorer of book pages, loaded on first use.

Where from: `--clip-model` (a folder, a hub id, which downloads on first use, or "tiny"); else the first model
folder in `DATA_DIR/models/CLIP/`; else, beside a tiny demo/test model, the tiny CLIP; else none: books are
still made and say why they have no scores. A hub download is never started unasked (offline machines would
wait minutes for the hub's retries).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pictale.core.config import Settings
from pictale.core.errors import ModelLoadError, ModelNotFound

SUGGESTED_CLIP = "openai/clip-vit-base-patch32"


class ScorerHolder:
    """Loads the scorer once; remembers why it could not, so a book says "scores unavailable: <why>"."""

    def __init__(
        self, settings: Settings, demo: Callable[[], bool] = lambda: False, make: Callable[[str], Any] | None = None
    ) -> None:
        self.settings = settings
        self.demo = demo
        """True while a tiny demo/test model is loaded: the tiny CLIP goes with it."""
        self.make = make
        """Builds the scorer from its source; None: a ClipScorer here. On Ray, one that scores on a replica (which
        also builds the tiny CLIP itself: the source is then "tiny")."""
        self._scorer: Any = None
        self._error: str | None = None
        self._source: str | None = None
        self._lock = threading.Lock()

    def source(self) -> str | None:
        s = self.settings
        if s.clip_model == "tiny" or (not s.clip_model and not self._local() and self.demo()):
            if self.make is not None:
                return "tiny"
            from pictale.engine.tiny.clip import ensure_tiny_clip  # lazy: it imports torch

            return str(ensure_tiny_clip(s.demo_path))
        return s.clip_model or self._local()

    def _local(self) -> str | None:
        s = self.settings
        found = sorted(p.parent for p in s.clip_path.glob("*/config.json")) if s.clip_path.is_dir() else []
        return str(found[0]) if found else None

    def get(self) -> Any | None:
        """The ClipScorer, or None when no CLIP model could be loaded (see `error`); loaded once per source."""
        with self._lock:
            source = self.source()
            if source != self._source:  # e.g. the demo model was swapped for a real one
                self._scorer, self._error, self._source = None, None, source
            if self._scorer is None and self._error is None:
                if source is None:
                    self._error = (
                        f"no CLIP model: put one (e.g. {SUGGESTED_CLIP}) in {self.settings.clip_path}/ "
                        "or start with --clip-model PATH_OR_HUB_ID"
                    )
                    return None
                make = self.make
                if make is None:
                    from pictale.engine.clip_scoring import ClipScorer as make

                try:
                    self._scorer = make(source)
                except (ModelLoadError, ModelNotFound, OSError, ValueError) as exc:
                    self._error = f"no CLIP model ({source}): {getattr(exc, 'message', exc)}"
            return self._scorer

    @property
    def error(self) -> str | None:
        return self._error
