"""Captions from a local captioning model (BLIP-style: image in, text out, no prompt), on the worker.

`models/captioner/` (a transformers folder: config.json, the weights, the processor) is loaded offline only. The
model's words replace the template captions of `photos.prepare`; captions the user gave are kept. Identity words
("a woman", "a man") are stripped for faces and characters, so the identity binds to the trigger, and every caption
starts with the trigger and class word (`shared/reference/training.md` §3.3). transformers is imported here, lazily;
`training.photos` stays torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from PIL import Image

from pictale.storage.userfiles import write_atomically
from pictale.training.photos.captions import caption_head, captioner_dir
from pictale.training.spec import PreparedPhoto, TrainingSpec

log = logging.getLogger(__name__)

IDENTITY_WORDS = (
    "man|woman|men|women|person|people|boy|girl|boys|girls|guy|lady|gentleman|child|kid|baby|"
    "young|old|older|elderly|teenage|teenager|blonde|brunette|arafed|araffe"
)
LEADS = re.compile(r"^(?:there is |this is )?(?:a |an )?(?:close up |closeup )?(?:photo|picture|image|painting) of ")


def model_text(raw: str, spec: TrainingSpec) -> str:
    """A model's caption as training text: lower case, lead-ins ("a photo of") and, for faces and characters,
    identity words dropped; the trigger and class word first. Empty when nothing is left."""
    text = re.sub(r"\s+", " ", raw).strip().lower()
    text = LEADS.sub("", text)
    if spec.kind in ("face", "character"):
        text = re.sub(rf"\b(?:a |an |the )?(?:{IDENTITY_WORDS})\b", "", text)
        text = re.sub(r"\s+", " ", text).strip(" ,.")
    text = text.strip(" ,.")
    return f"{caption_head(spec.trigger, spec.class_word, spec.kind)}, {text}" if text else ""


def caption_photos(
    photos: list[PreparedPhoto],
    spec: TrainingSpec,
    models_dir: Path | None,
    *,
    device: str = "cpu",
    max_new_tokens: int = 30,
) -> list[PreparedPhoto]:
    """The photos with model captions (and their `.txt` rewritten) where the caption was a template and
    `models_dir/captioner` holds a model; unchanged otherwise. A model that fails to load leaves the templates."""
    folder = captioner_dir(models_dir)
    todo = [i for i, p in enumerate(photos) if p.caption_from == "template"]
    if folder is None or not todo:
        return list(photos)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).to(device).eval()
    except Exception as exc:  # a half-copied or foreign folder: train on the template captions
        log.warning("captioner in %s not loaded (%s); keeping the template captions", folder, exc)
        return list(photos)
    out = list(photos)
    with torch.inference_mode():
        for i in todo:
            with Image.open(out[i].path) as image:
                inputs = processor(images=[image.convert("RGB")], return_tensors="pt").to(device)
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            caption = model_text(processor.batch_decode(ids, skip_special_tokens=True)[0], spec)
            if caption:
                write_atomically(Path(out[i].path).with_suffix(".txt"), caption.encode("utf-8"))
                out[i] = dataclasses.replace(out[i], caption=caption, caption_from="model")
    return out
