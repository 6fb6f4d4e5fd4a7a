"""The CLIP scorer of book pages, loaded on first use from `--clip-model` (path, hub id, or "tiny")."""

from __future__ import annotations

import threading
from typing import Any

from pictale.core.config import Settings
from pictale.core.errors import ModelLoadError, ModelNotFound

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


class ScorerHolder:
    """Loads the scorer once; remembers why it could not, so a book says "scores unavailable: <why>"."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._scorer: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def source(self) -> str:
        s = self.settings
        if s.clip_model == "tiny":
            from pictale.engine.tiny_clip import ensure_tiny_clip  # lazy: it imports torch

            return str(ensure_tiny_clip(s.models_path))
        if s.clip_model:
            return s.clip_model
        found = s.clip_path.glob("*/config.json") if s.clip_path.is_dir() else []
        local = sorted(p.parent for p in found)
        return str(local[0]) if local else DEFAULT_CLIP

    def get(self) -> Any | None:
        """The ClipScorer, or None when no CLIP model could be loaded (see `error`)."""
        with self._lock:
            if self._scorer is None and self._error is None:
                from pictale.engine.clip_scoring import ClipScorer

                source = self.source()
                try:
                    self._scorer = ClipScorer(source)
                except (ModelLoadError, ModelNotFound, OSError, ValueError) as exc:
                    self._error = f"no CLIP model ({source}): {getattr(exc, 'message', exc)}"
            return self._scorer

    @property
    def error(self) -> str | None:
        return self._error
