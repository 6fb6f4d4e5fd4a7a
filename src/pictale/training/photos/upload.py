"""The files of an upload: a zip taken apart within limits, junk left out, captions paired with their images."""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath

from pictale.core.errors import InvalidTrainingPhotos, UploadTooLarge

ZIP_MAX_FILES = 500
ZIP_MAX_BYTES = 512 * 1024 * 1024
"""Uncompressed, all files together: counted while reading, so a zip bomb's false headers do not matter."""
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})
CAPTION_SUFFIX = ".txt"


def is_ignored(name: str) -> bool:
    """macOS resource forks (`__MACOSX/`), hidden files and folders (`.DS_Store`), Windows' Thumbs.db/desktop.ini."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return (
        not parts
        or "__MACOSX" in parts
        or any(part.startswith(".") for part in parts)
        or parts[-1].lower() in JUNK_NAMES
    )


def files_from_zip(
    data: bytes, *, name: str = "photos.zip", max_files: int = ZIP_MAX_FILES, max_bytes: int = ZIP_MAX_BYTES
) -> list[tuple[str, bytes]]:
    """The (path in the zip, bytes) of each file in a zip, sorted by path, folders and junk left out.

    More than `max_files` files or `max_bytes` uncompressed: UploadTooLarge (413). Not a zip, or an encrypted one:
    InvalidTrainingPhotos naming `name`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidTrainingPhotos([{"file": name, "problem": "not a readable zip archive"}]) from None
    with archive:
        entries = sorted(
            (info for info in archive.infolist() if not info.is_dir() and not is_ignored(info.filename)),
            key=lambda info: info.filename,
        )
        if len(entries) > max_files:
            raise UploadTooLarge(f"{name}: {len(entries)} files, more than the limit of {max_files}", param="photos")
        files: list[tuple[str, bytes]] = []
        left = max_bytes
        for info in entries:
            if info.flag_bits & 0x1:
                raise InvalidTrainingPhotos([{"file": f"{name}/{info.filename}", "problem": "encrypted in the zip"}])
            try:
                with archive.open(info) as member:
                    content = member.read(left + 1)  # never more than the limit, whatever the header claims
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, RuntimeError) as exc:
                problem = f"cannot be extracted from the zip ({exc})"
                raise InvalidTrainingPhotos([{"file": f"{name}/{info.filename}", "problem": problem}]) from None
            left -= len(content)
            if left < 0:
                raise UploadTooLarge(
                    f"{name}: more than {max_bytes // (1024 * 1024)} MB once uncompressed (limit)", param="photos"
                )
            files.append((info.filename, content))
    return files


def caption_key(name: str) -> str:
    """The name without its last suffix: `a/b.JPG` and `a/b.txt` pair up (case kept, as file systems do)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return str(path.with_suffix("")) if path.suffix else str(path)


def split_captions(files: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], dict[str, tuple[str, bytes]]]:
    """(image candidates, {caption key: (caption file name, bytes)}); junk files are dropped here."""
    images: list[tuple[str, bytes]] = []
    captions: dict[str, tuple[str, bytes]] = {}
    for name, data in files:
        if is_ignored(name):
            continue
        if name.lower().endswith(CAPTION_SUFFIX):
            captions[caption_key(name)] = (name, data)
        else:
            images.append((name, data))
    return images, captions
