"""CLIP features for scoring book pages: text-image (CLIP-T) and image-image (CLIP-I) similarity.

Uses transformers' `CLIPModel` (open_clip needs torchvision, which does not run beside the CPU torch build).
Features come back L2-normalised as plain float lists, so the story layer computes cosines without torch.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from pictale.core.errors import ModelLoadError, ModelNotFound

log = logging.getLogger(__name__)


class ClipScorer:
    """One CLIP model; thread-safe (a lock around each forward pass), loaded from a folder or a hub id."""

    def __init__(self, source: str | Path, *, device: str = "cpu") -> None:
        path = Path(source)
        local = path.is_dir()
        if not local and (Path(str(source)).is_absolute() or str(source).startswith(".")):
            raise ModelNotFound(f"CLIP model folder {source} does not exist", param="clip_model")
        try:
            self.model = CLIPModel.from_pretrained(str(source), use_safetensors=True).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(source))
        except OSError as exc:
            raise ModelLoadError(f"could not load the CLIP model {source}: {exc}") from exc
        if len(self.processor.tokenizer) <= 2:  # an empty tokenizer loads "fine" from a wrong folder
            raise ModelLoadError(f"the CLIP model {source} has no usable tokenizer")
        self.source = str(source)
        self.device = device
        self._lock = threading.Lock()
        self._max_tokens = int(self.model.config.text_config.max_position_embeddings)
        log.info("CLIP scorer loaded from %s", source)

    def text_features(self, texts: list[str]) -> list[list[float]]:
        """Normalised text embeddings; texts longer than CLIP's window (77 tokens) are cut there."""
        inputs = self.processor.tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt"
        ).to(self.device)
        with self._lock, torch.inference_mode():
            feats = self.model.get_text_features(**inputs)
        return _normalised(feats)

    def image_features(self, images: list[Image.Image]) -> list[list[float]]:
        """Normalised image embeddings."""
        inputs = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device)
        with self._lock, torch.inference_mode():
            feats = self.model.get_image_features(pixel_values=pixels)
        return _normalised(feats)


def _normalised(feats) -> list[list[float]]:
    if not isinstance(feats, torch.Tensor):  # some transformers versions return a model output
        feats = feats.pooler_output
    feats = feats.float()
    return (feats / feats.norm(dim=-1, keepdim=True)).tolist()
