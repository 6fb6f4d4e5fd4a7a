"""Face likeness of samples to the training photos: dlib's 128-d face descriptor (`shared/reference/training.md`
§3.1, §4), an optional extra (`pip install 'pictale[faces]'`: dlib-bin and face_recognition_models).

dlib's HOG detector finds the faces (compiled into dlib), the largest one is aligned on 5 points
(`shape_predictor_5_face_landmarks.dat`; not the 68-point model, whose training data excludes commercial use) and
its 150 px chip goes through dlib's ResNet (`dlib_face_recognition_resnet_model_v1.dat`). Both model files ship inside
the face_recognition_models package: nothing is downloaded. Faces are compared by Euclidean distance (dlib's
same-person threshold: 0.6); the cosine is poorly spread (0.88 between different people), so it is not used.

About 0.5 s per image on a CPU. No torch here.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

SAME_PERSON = 0.6
"""dlib's threshold: descriptors closer than this are the same person (99.38 % on LFW)."""
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DETECT_SIDE = 1024
"""Detection runs on a copy whose long side is at most this (HOG on 12 MP takes seconds)."""
UPSAMPLE_BELOW = 640
"""Images whose long side is below this are searched once upsampled (HOG's window is 80 px: finds ~40 px faces)."""

_lock = threading.Lock()


@dataclass(frozen=True)
class FaceSimilarity:
    """`similarity`: mean over the samples with a face of 1 - (distance to the nearest reference face), None when no
    sample or no reference has one; `found`: the share of samples with a face."""

    similarity: float | None
    found: float


def _models_dir() -> Path | None:
    # face_recognition_models/__init__ imports pkg_resources (gone from setuptools >= 81): find its folder without
    # importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if (folder / SHAPE_MODEL).is_file() and (folder / DESCRIPTOR_MODEL).is_file():
            return folder
    return None


def available() -> bool:
    """Whether dlib and the face_recognition_models files are installed (nothing is loaded)."""
    return importlib.util.find_spec("dlib") is not None and _models_dir() is not None


@lru_cache(maxsize=1)
def _models() -> tuple[Any, Any, Any]:
    import dlib

    folder = _models_dir()
    if folder is None:
        raise RuntimeError("face likeness needs face_recognition_models: pip install 'pictale[faces]'")
    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(folder / SHAPE_MODEL))
    encoder = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL))
    return detector, shape, encoder


def _rgb(image: Image.Image | str | Path | Any) -> Image.Image:
    """A PIL image, a path, or anything with a `.path` (`spec.PreparedPhoto`), as an upright RGB image."""
    if not isinstance(image, Image.Image):
        with Image.open(getattr(image, "path", image)) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    return image.convert("RGB")


def descriptor(image: Image.Image | str | Path | Any) -> np.ndarray | None:
    """The 128-d descriptor of the largest face in `image`, or None when no face is found."""
    detector, shape, encoder = _models()
    image = _rgb(image)
    scale = max(image.size) / DETECT_SIDE if max(image.size) > DETECT_SIDE else 1.0
    if scale > 1.0:
        size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    with _lock:  # one dlib model set shared by every thread
        faces = detector(pixels, 1 if max(image.size) < UPSAMPLE_BELOW else 0)
        if len(faces) == 0:
            return None
        face = max(faces, key=lambda r: (r.width() * r.height(), -r.top(), -r.left()))
        chip = shape(pixels, face)
        return np.asarray(encoder.compute_face_descriptor(pixels, chip), dtype=np.float64)


def descriptors(images: Sequence[Image.Image | str | Path | Any]) -> list[np.ndarray | None]:
    """`descriptor` of each image (PIL images, paths, or PreparedPhoto): None where no face is found."""
    return [descriptor(image) for image in images]


def compare(samples: Sequence[np.ndarray | None], references: Sequence[np.ndarray | None]) -> FaceSimilarity:
    """`FaceSimilarity` of sample descriptors to reference descriptors (as `descriptors` returns them)."""
    refs = [r for r in references if r is not None]
    found = [s for s in samples if s is not None]
    share = round(len(found) / len(samples), 6) if samples else 0.0
    if not refs or not found:
        return FaceSimilarity(None, share)
    ref = np.stack(refs)
    nearest = [float(np.linalg.norm(ref - s, axis=1).min()) for s in found]
    return FaceSimilarity(round(1.0 - float(np.mean(nearest)), 6), share)


def face_similarity(
    samples: Sequence[Image.Image | str | Path | Any], references: Sequence[Image.Image | str | Path | Any]
) -> float | None:
    """Mean over the samples with a face of 1 - (Euclidean distance to the nearest reference face): above 0.4 is
    the same person by dlib's threshold. None when no sample or no reference has a face."""
    return compare(descriptors(samples), descriptors(references)).similarity
