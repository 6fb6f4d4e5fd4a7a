"""Offline face detection and the crops around a face (`shared/reference/training.md` §3.1).

OpenCV's Haar cascades ship inside `opencv-python-headless<5` (5.x wheels carry no cascade files): no download at
run time. `alt2` first, `default` when alt2 finds nothing (it finds smaller faces, with more false boxes). The
largest face wins. Boxes are `(x, y, w, h)` in the pixels of the (upright) image given.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pictale.core.errors import UnsupportedFeature

Box = tuple[int, int, int, int]

DETECT_SIDE = 1024
"""Detection runs on a copy whose long side is at most this: Haar on 12 MP takes seconds, faces stay found."""
MIN_FACE = 0.05
"""Smallest face searched, as a share of the short side (smaller boxes are mostly false ones)."""
FACE_CROP = 2.5
"""face: the square crop's side in face heights (head and shoulders)."""
FIGURE_HEIGHT = 8.0
"""character: the crop's height in face heights (a standing figure is about 7-8 heads)."""
CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_frontalface_default.xml")


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - a regular dependency; this guards a broken install
        raise UnsupportedFeature(
            "face detection needs OpenCV with its Haar cascades: pip install 'opencv-python-headless<5'",
            param="kind",
        ) from None
    return cv2


def face_box(image: Image.Image) -> Box | None:
    """The largest frontal face in `image` as (x, y, w, h), or None when none is found."""
    cv2 = _cv2()
    scale = max(image.size) / DETECT_SIDE if max(image.size) > DETECT_SIDE else 1.0
    grey = image.convert("L")
    if scale > 1.0:
        size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    pixels = np.ascontiguousarray(np.asarray(grey, dtype=np.uint8))
    smallest = max(20, int(min(grey.size) * MIN_FACE))
    for name in CASCADES:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)  # ~10 ms; a fresh one per call is thread-safe
        if cascade.empty():
            raise UnsupportedFeature(
                f"OpenCV has no {name} (opencv-python-headless 5.x ships none): pip install 'opencv-python-headless<5'",
                param="kind",
            )
        found = cascade.detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
        if len(found):
            x, y, w, h = max((tuple(int(v) for v in box) for box in found), key=lambda b: (b[2] * b[3], -b[1], -b[0]))
            return round(x * scale), round(y * scale), round(w * scale), round(h * scale)
    return None


def _place(center: float, length: float, limit: int) -> tuple[int, int]:
    """An interval of `length` centred on `center`, shifted inside [0, limit] (and cut to it when longer)."""
    length = min(round(length), limit)
    start = round(center - length / 2)
    start = min(max(0, start), limit - length)
    return start, start + length


def crop_box(kind: str, face: Box | None, size: tuple[int, int], resolution: int) -> tuple[int, int, int, int]:
    """The region (left, top, right, bottom) of an image of `size` to train on for this kind.

    face: a square of FACE_CROP face heights around the face, its centre a little below the face's so the shoulders
    show; character: FIGURE_HEIGHT face heights from just above the head, 3:4; both grow to at least `resolution`
    where the image allows, so small faces in large photos are not upscaled. style, object or no face: all of it."""
    width, height = size
    if face is None or kind not in ("face", "character"):
        return 0, 0, width, height
    x, y, w, h = face
    cx = x + w / 2
    if kind == "face":
        side = max(FACE_CROP * max(w, h), resolution)
        crop_w = crop_h = min(side, width, height)
        cy = y + h * 0.65  # the face's centre is at 0.5: a bit lower shows the neck and shoulders
    else:
        crop_h = max(FIGURE_HEIGHT * h, resolution)
        crop_w = max(crop_h * 3 / 4, resolution, 3 * w)
        crop_h, crop_w = min(crop_h, height), min(crop_w, width)
        cy = max(y - 0.75 * h, 0) + crop_h / 2  # from just above the head, downwards
    left, right = _place(cx, crop_w, width)
    top, bottom = _place(cy, crop_h, height)
    return left, top, right, bottom
