"""Every check before any compute or storage: one 4xx listing each bad file and its problem.

Unreadable files, photos smaller than the training resolution, very blurry ones, near-duplicates, photos without a
face (face preset), captions without a photo, too few photos for the preset. Photos are decoded with a pixel limit
and turned upright from their EXIF orientation first (a sideways face is not found, §3.2 of the training notes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps, ImageStat

from pictale.core.errors import InvalidImage, InvalidTrainingPhotos
from pictale.core.images import NOT_AN_IMAGE, open_checked, to_rgb
from pictale.training.photos.captions import CAPTION_MAX_CHARS
from pictale.training.photos.faces import Box, face_box
from pictale.training.photos.upload import caption_key, split_captions
from pictale.training.spec import KINDS

MIN_IMAGES = {"face": 10, "character": 10, "style": 5, "object": 5}
"""Fewest usable photos per preset (20-40 is the aim; below these a LoRA mostly learns the backgrounds)."""
MAX_IMAGES = 200
MAX_PIXELS = 8192 * 8192
"""Largest photo decoded (camera photos run to 50 MP; the header is checked before any pixel is decoded)."""
BLUR_THRESHOLD = 50.0
"""Variance of the Laplacian on a grey copy with a 512 px long side: sharp photos score hundreds, a Gaussian blur of
radius 1 about 70, radius 2 about 11 (§3.2). Below this a photo is "very blurry"."""
BLUR_SIDE = 512
DUPLICATE_DISTANCE = 8
"""Perceptual-hash (pHash) Hamming distance at or under which two photos are near-duplicates: re-saves, resizes and
brightness changes score 0, other photos of one person 30-36, a mirror image 32 (§3.2)."""
WORK_SIDE = 1024
"""Checks run on a copy whose long side is at most this (JPEGs decode straight to it with Pillow's draft)."""
FACE_REQUIRED = frozenset({"face"})
"""Kinds where a photo without a face is refused. Characters are often drawn, where a photo-trained detector misses
faces: their crop centres on the face when one is found and keeps the whole picture otherwise."""


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo that passed every check: its upload, its upright size and what the checks measured."""

    name: str
    data: bytes
    width: int
    height: int
    """Upright (EXIF orientation applied), in the original's pixels."""
    face: Box | None
    """The largest face (x, y, w, h) in upright original pixels; None when not searched (style, object) or not found."""
    caption: str | None
    """The text of the `.txt` of the same name, when one was given."""
    sharpness: float
    brightness: float
    phash: str


def sharpness(image: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of a grey copy with a BLUR_SIDE long side."""
    grey = image.convert("L")
    scale = BLUR_SIDE / max(grey.size)
    grey = grey.resize(
        (max(3, round(grey.width * scale)), max(3, round(grey.height * scale))), Image.Resampling.LANCZOS
    )
    g = np.asarray(grey, dtype=np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def decode_upright(
    data: bytes, *, name: str, max_pixels: int = MAX_PIXELS, work_side: int | None = None
) -> Image.Image:
    """Decode an upload to RGB, EXIF orientation applied; with `work_side`, JPEGs decode at a reduced scale no
    smaller than that. InvalidImage (naming `name`) when it is not an image or too large."""
    if not data:
        raise InvalidImage(f"{name}: empty file", param=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = open_checked(data, field=name, max_pixels=max_pixels)
            if work_side:
                image.draft("RGB", (work_side, work_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(f"{name}: image too large to decode safely", param=name) from None
    except Exception:
        raise InvalidImage(f"{name}: {NOT_AN_IMAGE}", param=name) from None


def _upright_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    if not data:
        raise InvalidImage(f"{name}: empty file", param=name)
    image = open_checked(data, field=name, max_pixels=max_pixels)
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        raise InvalidImage(f"{name}: {NOT_AN_IMAGE}", param=name) from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _caption_text(name: str, data: bytes) -> tuple[str | None, str | None]:
    """(text, problem) of a caption file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "caption is not UTF-8 text"
    if len(text) > CAPTION_MAX_CHARS:
        return None, f"caption is {len(text)} characters, more than the limit of {CAPTION_MAX_CHARS}"
    return text, None


def check_photos(
    files: list[tuple[str, bytes]],
    *,
    kind: str,
    resolution: int,
    min_images: int | None = None,
    max_images: int = MAX_IMAGES,
    max_pixels: int = MAX_PIXELS,
    blur_threshold: float = BLUR_THRESHOLD,
) -> list[CheckedPhoto]:
    """The usable photos of an upload (`.txt` files are the captions of the photo of the same name), in upload order.

    Any problem with any file raises one InvalidTrainingPhotos listing them all; nothing is written anywhere."""
    if kind not in KINDS:
        raise InvalidTrainingPhotos([{"file": None, "problem": f"unknown kind {kind!r} (one of {', '.join(KINDS)})"}])
    images, caption_files = split_captions(files)
    problems: list[dict] = []
    if len(images) > max_images:
        raise InvalidTrainingPhotos(
            [{"file": None, "problem": f"{len(images)} photos, more than the limit of {max_images}"}]
        )

    captions: dict[str, str] = {}
    for key, (name, data) in caption_files.items():
        text, problem = _caption_text(name, data)
        if problem:
            problems.append({"file": name, "problem": problem})
        elif text is not None:
            captions[key] = text
    image_keys = {caption_key(name) for name, _ in images}
    for key, (name, _) in caption_files.items():
        if key not in image_keys:
            problems.append({"file": name, "problem": "a caption with no photo of the same name"})

    checked: list[CheckedPhoto] = []
    hashes: list[tuple[str, imagehash.ImageHash]] = []
    for name, data in images:
        try:
            width, height = _upright_size(data, name, max_pixels)
            work = decode_upright(data, name=name, max_pixels=max_pixels, work_side=WORK_SIDE)
        except InvalidImage as exc:
            problems.append({"file": name, "problem": exc.message.removeprefix(f"{name}: ")})
            continue
        own: list[str] = []
        if min(width, height) < resolution:
            own.append(
                f"too small ({width}x{height}; the short side must be at least {resolution} px for this training)"
            )
        sharp = sharpness(work)
        if kind != "style" and sharp < blur_threshold:  # a soft look may be the style itself
            own.append(f"very blurry (sharpness {sharp:.0f}, at least {blur_threshold:.0f} needed)")
        phash = imagehash.phash(work)
        twin = next((other for other, h in hashes if phash - h <= DUPLICATE_DISTANCE), None)
        if twin is not None:
            own.append(f"near-duplicate of {twin}")
        hashes.append((name, phash))
        face = None
        if kind in ("face", "character"):
            found = face_box(work)
            if found is not None:
                sx, sy = width / work.width, height / work.height
                face = (round(found[0] * sx), round(found[1] * sy), round(found[2] * sx), round(found[3] * sy))
            elif kind in FACE_REQUIRED:
                own.append("no face found (a frontal face, upright, is needed for this kind)")
        problems.extend({"file": name, "problem": p} for p in own)
        if not own:
            brightness = ImageStat.Stat(work.convert("L")).mean[0]
            checked.append(
                CheckedPhoto(
                    name, data, width, height, face, captions.get(caption_key(name)), sharp, brightness, str(phash)
                )
            )

    needed = MIN_IMAGES[kind] if min_images is None else min_images
    if len(checked) < needed:
        usable = f"{len(checked)} usable photo(s)" + (f" of {len(images)}" if len(images) != len(checked) else "")
        problems.append(
            {"file": None, "problem": f"too few photos: {usable}; the {kind} preset needs at least {needed}"}
        )
    if problems:
        raise InvalidTrainingPhotos(problems)
    return checked
