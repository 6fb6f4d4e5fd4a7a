"""Captions without a model (`shared/reference/training.md` §3.3): a given `.txt` wins; otherwise the trigger, the
class word and what varies between photos (framing, light), never the constant traits of the subject, or identity
binds to those words. A captioning model, when `models/captioner/` holds one, runs on the worker
(`training.captioner`): it needs torch, and this package must not import it.
"""

from __future__ import annotations

import re
from pathlib import Path

CAPTION_MAX_CHARS = 2000
CAPTIONER_DIR = "captioner"

FRAMINGS = ((0.45, "close-up"), (0.22, "portrait"), (0.10, "half body"))
"""Face-box height as a share of the image height, largest first; below the last: full body."""


def clean_caption(text: str, trigger: str) -> str:
    """A user's caption on one line, the trigger put first when the user left it out (else nothing learns it)."""
    text = re.sub(r"\s+", " ", text).strip().strip(",").strip()
    if not re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", text):
        text = f"{trigger}, {text}" if text else trigger
    return text


def framing(face_height: int, image_height: int) -> str:
    """close-up, portrait, half body or full body, from how tall the face is in the image."""
    share = face_height / image_height
    return next((word for least, word in FRAMINGS if share >= least), "full body")


def orientation(width: int, height: int) -> str:
    """square, landscape or vertical format (style and object captions, which have no face to frame)."""
    if max(width, height) <= 1.1 * min(width, height):
        return "square format"
    return "landscape format" if width > height else "vertical format"


def lighting(brightness: float) -> str | None:
    """A word for a photo that is clearly dark or bright (mean luminance 0-255); None for the ordinary ones."""
    if brightness < 60:
        return "low light"
    if brightness > 200:
        return "bright light"
    return None


def caption_head(trigger: str, class_word: str, kind: str) -> str:
    """What every caption of a training starts with: `"{trigger} {class_word}"` (`"{trigger} style"` for a style
    without a class word)."""
    if class_word:
        return f"{trigger} {class_word}"
    return f"{trigger} style" if kind == "style" else trigger


def template_caption(
    *,
    trigger: str,
    class_word: str,
    kind: str,
    size: tuple[int, int],
    face_height: int | None,
    brightness: float,
) -> str:
    """`"{trigger} {class_word}, {framing}"` (+ light): framing from the face in a face/character crop of `size`,
    else the orientation. A style's trigger is the style: `"{trigger} style, ..."` when class_word is empty."""
    words = [caption_head(trigger, class_word, kind)]
    if face_height and kind in ("face", "character"):
        words.append(framing(face_height, size[1]))
    else:
        words.append(orientation(*size))
    light = lighting(brightness)
    if light:
        words.append(light)
    return ", ".join(words)


def captioner_dir(models_dir: Path | None) -> Path | None:
    """`models_dir/captioner` when it holds a transformers model (a config.json), else None."""
    if models_dir is None:
        return None
    folder = Path(models_dir) / CAPTIONER_DIR
    return folder if (folder / "config.json").is_file() else None
