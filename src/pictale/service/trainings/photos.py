"""The photos of a training: uploads, a zip, or the key's face avatars, gathered in memory, then checked and
prepared by `training.photos.prepare` (one 4xx listing every bad file, before anything is written).

Captions: a `.txt` of the same name beside a photo (in the uploads or the zip) travels with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pictale.avatars.validate import clean_filename
from pictale.core.errors import InvalidUpload, UnknownAvatarError, UploadTooLarge
from pictale.core.types import AvatarKind
from pictale.training.photos import files_from_zip
from pictale.training.photos import prepare as prepare_photos
from pictale.training.photos.upload import ZIP_MAX_BYTES
from pictale.training.spec import PreparedPhoto, TrainingSpec

MAX_FILE_BYTES = 64 * 2**20
Upload = tuple[str | None, BinaryIO]


def collect(
    files: Sequence[Upload] = (),
    archive: Upload | None = None,
    face_avatars: Sequence[str] = (),
    *,
    registry: Any = None,
    owner: str = "",
) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file sent (photos and captions); nothing at all: 422 naming `photos`."""
    out: list[tuple[str, bytes]] = []
    for i, (filename, stream) in enumerate(files):
        name = clean_filename(filename, i)
        out.append((name, _read(stream, MAX_FILE_BYTES, name, "photos")))
    if archive is not None:
        shown = clean_filename(archive[0], 0)
        out += files_from_zip(_read(archive[1], ZIP_MAX_BYTES, shown, "zip"), name=shown)
    for name in face_avatars:
        ref = registry.resolve(owner, AvatarKind.FACE, name, 1.0) if registry is not None else None
        if ref is None:
            raise UnknownAvatarError(f"you have no face avatar named {name!r}", param="face_avatars")
        out += [(f"{name}-{i + 1}.png", path.read_bytes()) for i, path in enumerate(ref.files)]
    if not out:
        raise InvalidUpload(
            "no photos: send them as `photos` files, as a `zip`, or name `face_avatars`", param="photos"
        )
    return out


def _read(stream: BinaryIO, limit: int, name: str, param: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"{name}: larger than {limit // 2**20} MB", param=param)
    return data


def prepare(files: list[tuple[str, bytes]], spec: TrainingSpec, workdir: Path) -> list[PreparedPhoto]:
    """Checked, upright, cropped, bucketed and captioned photos under `workdir/photos` (or InvalidTrainingPhotos)."""
    return prepare_photos(files, spec, workdir)


def remove(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
