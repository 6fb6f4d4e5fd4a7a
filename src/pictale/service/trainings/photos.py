"""The photos of a training: uploads, a zip, or the key's face avatars, copied into the work dir, then checked
and prepared by `training.photos.prepare` (one 4xx listing every bad file, before anything is accepted).

Captions: a `.txt` beside a photo (same stem, in the uploads or the zip) travels with it.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pictale.avatars.validate import clean_filename
from pictale.core.errors import InvalidUpload, UnknownAvatarError, UploadTooLarge
from pictale.core.types import AvatarKind
from pictale.training.spec import PreparedPhoto, TrainingSpec

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic")
MAX_FILES = 200
MAX_FILE_BYTES = 40 * 2**20
MAX_TOTAL_BYTES = 1024 * 2**20
Upload = tuple[str | None, BinaryIO]


def collect(
    dest: Path,
    files: Sequence[Upload] = (),
    archive: Upload | None = None,
    face_avatars: Sequence[str] = (),
    *,
    registry: Any = None,
    owner: str = "",
) -> list[Path]:
    """Copy every photo (and caption) into `dest`; returns the photos in order. Nothing usable: 422."""
    dest.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    total = 0
    for i, (filename, stream) in enumerate(files):
        total += _write(dest, names, clean_filename(filename, i), stream.read(MAX_FILE_BYTES + 1), "photos", total)
    if archive is not None:
        total = _unzip(dest, names, archive, total)
    for name in face_avatars:
        ref = registry.resolve(owner, AvatarKind.FACE, name, 1.0) if registry is not None else None
        if ref is None:
            raise UnknownAvatarError(f"you have no face avatar named {name!r}", param="face_avatars")
        for i, path in enumerate(ref.files):  # blobs have no suffix; images are opened by their content
            total += _write(dest, names, f"{name}-{i + 1}.png", path.read_bytes(), "face_avatars", total)
    photos = sorted((p for p in dest.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES), key=lambda p: p.name)
    if not photos:
        raise InvalidUpload(
            "no photos: send them as `photos` files, as a `zip`, or name `face_avatars`", param="photos"
        )
    if len(photos) > MAX_FILES:
        raise InvalidUpload(f"{len(photos)} photos: at most {MAX_FILES}", param="photos")
    return photos


def _write(dest: Path, names: set[str], name: str, data: bytes, param: str, total: int) -> int:
    if len(data) > MAX_FILE_BYTES:
        raise UploadTooLarge(f"{name}: larger than {MAX_FILE_BYTES // 2**20} MB", param=param)
    if total + len(data) > MAX_TOTAL_BYTES:
        raise UploadTooLarge(f"the photos are larger than {MAX_TOTAL_BYTES // 2**20} MB together", param=param)
    suffix = Path(name).suffix.lower()
    if suffix not in (*PHOTO_SUFFIXES, ".txt"):
        raise InvalidUpload(
            f"{name}: not a photo (expected {', '.join(PHOTO_SUFFIXES)}) or a .txt caption", param=param
        )
    stem, n = Path(name).stem, 1
    while name.lower() in names:  # two files of one name (from two folders of a zip): keep both
        n += 1
        name = f"{stem}-{n}{suffix}"
    names.add(name.lower())
    (dest / name).write_bytes(data)
    return len(data)


def _unzip(dest: Path, names: set[str], archive: Upload, total: int) -> int:
    filename, stream = archive
    shown = clean_filename(filename, 0)
    try:
        with zipfile.ZipFile(stream) as z:
            members = [m for m in z.infolist() if not m.is_dir() and _wanted(m.filename)]
            if len(members) > MAX_FILES * 2:
                raise InvalidUpload(f"{shown}: {len(members)} files, at most {MAX_FILES * 2}", param="zip")
            for m in members:
                if m.file_size > MAX_FILE_BYTES:  # the declared size: refused before inflating it
                    raise UploadTooLarge(
                        f"{shown}: {m.filename} is larger than {MAX_FILE_BYTES // 2**20} MB", param="zip"
                    )
                with z.open(m) as f:
                    total += _write(dest, names, Path(m.filename).name, f.read(MAX_FILE_BYTES + 1), "zip", total)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise InvalidUpload(f"{shown}: not a readable zip file ({exc})", param="zip") from None
    return total


def _wanted(member: str) -> bool:
    """Photos and captions; not macOS resource forks, hidden files or other files."""
    parts = member.replace("\\", "/").split("/")
    if "__MACOSX" in parts or parts[-1].startswith("."):
        return False
    return Path(parts[-1]).suffix.lower() in (*PHOTO_SUFFIXES, ".txt")


def prepare(photos: list[Path], spec: TrainingSpec, workdir: Path, models_dir: Path) -> list[PreparedPhoto]:
    """Checked and prepared photos (`training.photos.prepare`: one 4xx listing each bad file and its problem)."""
    try:
        from pictale.training.photos import prepare as prepare_photos
    except ImportError:  # until training/photos/ is merged: readable images, oriented, converted to PNG
        return _plain(photos, spec, workdir / "photos")
    return prepare_photos(photos, spec, workdir, models_dir)


def _plain(photos: list[Path], spec: TrainingSpec, out: Path) -> list[PreparedPhoto]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    out.mkdir(parents=True, exist_ok=True)
    prepared, problems = [], []
    for i, path in enumerate(photos):
        try:
            with Image.open(path) as im:
                image = ImageOps.exif_transpose(im).convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            problems.append(f"{path.name}: not a readable image ({type(exc).__name__})")
            continue
        target = out / f"{i:03d}.png"
        image.save(target)
        caption = path.with_suffix(".txt")
        text = caption.read_text("utf-8").strip() if caption.is_file() else f"{spec.trigger} {spec.class_word}"
        prepared.append(PreparedPhoto(str(target), text, path.name, image.width, image.height))
    if problems:
        raise InvalidUpload("; ".join(problems), param="photos")
    return prepared


def remove(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
