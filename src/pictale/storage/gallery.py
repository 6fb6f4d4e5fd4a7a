"""The gallery: every image a key generated, one row each, its file and a thumbnail under ROOT.

Files are named by the row id, never by the owner (owner ids may hold any character): ROOT/ab/img_ab....png
and ROOT/ab/img_ab....thumb.webp beside it. Both are written (atomically) before the row, and the row is
deleted before its files, so a row without files happens only when someone removes them by hand: reads of a
missing file are None, never an error. Files without a row (a crash between the two) go at the next purge.
"""

from __future__ import annotations

import io
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import BigInteger, Float, Integer, String, Text, delete, func, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from pictale.storage.db import Database
from pictale.storage.tables import Base
from pictale.storage.userfiles import write_atomically

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256
DAY = 86400.0
_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}


class GalleryImageRow(Base):
    """One generated image of one owner (an API key id, `basic:<user>` or `local`)."""

    __tablename__ = "gallery_images"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    """Unix seconds with a fraction: the images of one job keep their order, and paging is exact."""
    job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    prompt: Mapped[str] = mapped_column(Text, default="")
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(255), default=None)
    infotext: Mapped[str] = mapped_column(Text, default="")
    file: Mapped[str] = mapped_column(String(128))
    """Relative to the gallery root; the thumbnail is its stem + `.thumb.webp`."""
    size: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True)
class NewImage:
    """What the recorder knows of one generated image."""

    data: bytes
    """The encoded image exactly as the client got it (PNG with its infotext, or JPEG/WebP)."""
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    model: str | None = None
    infotext: str = ""


@dataclass(frozen=True)
class GalleryImage:
    id: str
    owner: str
    created: float
    job_id: str | None
    prompt: str
    negative_prompt: str
    seed: int | None
    width: int
    height: int
    model: str | None
    infotext: str
    file: str
    size: int

    @property
    def extension(self) -> str:
        return Path(self.file).suffix.lstrip(".")

    @property
    def media_type(self) -> str:
        return next((m for ext, m in _FORMATS.values() if ext == self.extension), "application/octet-stream")


def _image(row: GalleryImageRow) -> GalleryImage:
    return GalleryImage(
        row.id, row.owner_id, row.created_at, row.job_id, row.prompt, row.negative_prompt, row.seed, row.width,
        row.height, row.model, row.infotext, row.file, row.size,
    )  # fmt: skip


def _like(text: str) -> str:
    """`%text%` for LIKE with `\\` escaping: `%` and `_` in a search match themselves."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def thumbnail(data: bytes) -> tuple[bytes, tuple[int, int], str]:
    """(a WebP at most THUMBNAIL_SIZE px on its longer side, the image's size, its file extension)."""
    with Image.open(io.BytesIO(data)) as img:
        size, fmt = img.size, img.format or "PNG"
        small = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buf = io.BytesIO()
    small.save(buf, format="WEBP", quality=80)
    return buf.getvalue(), size, _FORMATS.get(fmt, ("png", ""))[0]


class GalleryStore:
    """Add, list, read and delete the gallery images of one owner; `purge` applies the retention limits."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = Path(root)

    # -- writing ---------------------------------------------------------------------------------
    def add(self, owner: str, job_id: str | None, images: Sequence[NewImage]) -> list[GalleryImage]:
        """Write each image and its thumbnail, then their rows (one transaction); returns them in order."""
        rows: list[GalleryImageRow] = []
        now = time.time()
        try:
            for i, new in enumerate(images):
                image_id = "img_" + secrets.token_hex(8)
                thumb, (width, height), ext = thumbnail(new.data)
                file = f"{image_id[4:6]}/{image_id}.{ext}"
                fields = {"negative_prompt": new.negative_prompt, "seed": new.seed, "model": new.model}
                rows.append(GalleryImageRow(
                    id=image_id, owner_id=owner, created_at=now + i * 1e-3, job_id=job_id, prompt=new.prompt,
                    width=width, height=height, infotext=new.infotext, file=file, size=len(new.data), **fields,
                ))  # fmt: skip
                write_atomically(self.root / file, new.data)
                write_atomically(self._thumb_path(file), thumb)
            with self.db.session() as s:
                s.add_all(rows)
        except BaseException:
            self._remove_files(r.file for r in rows)
            raise
        return [_image(r) for r in rows]

    def delete(self, owner: str, image_id: str) -> bool:
        """Delete one image of `owner` (row, then files); False when there is none of that id for them."""
        with self.db.session() as s:
            row = s.get(GalleryImageRow, image_id)
            if row is None or row.owner_id != owner:
                return False
            file = row.file
            s.delete(row)
        self._remove_files([file])
        return True

    def purge(self, *, days: float = 0, max_images: int = 0, owner: str | None = None, now: float | None = None) -> int:
        """Delete images older than `days` and, per owner, all but the newest `max_images` (0: no such limit);
        only `owner`'s when given. Returns how many went."""
        files: list[str] = []
        t = GalleryImageRow
        with self.db.session() as s:
            where = [] if owner is None else [t.owner_id == owner]
            if days > 0:
                cutoff = (time.time() if now is None else now) - days * DAY
                files += self._delete_rows(s, s.execute(select(t.id, t.file).where(t.created_at < cutoff, *where)))
            if max_images > 0:
                owners = [owner] if owner is not None else list(s.scalars(select(t.owner_id).distinct()))
                for who in owners:
                    newest_first = t.created_at.desc(), t.id.desc()
                    extra = select(t.id, t.file).where(t.owner_id == who).order_by(*newest_first).offset(max_images)
                    files += self._delete_rows(s, s.execute(extra))
        self._remove_files(files)
        return len(files)

    def remove_orphans(self) -> int:
        """Files no row names (a crash between writing them and their row, or stale temp files)."""
        if not self.root.is_dir():
            return 0
        with self.db.session() as s:
            known = {Path(f).stem for f in s.scalars(select(GalleryImageRow.file))}
        removed = 0
        for path in self.root.glob("*/*"):
            stem = path.name.split(".")[0] or path.name  # ".img_x.png.abc.tmp": a write that never finished
            if path.is_file() and (path.name.startswith(".") or stem not in known):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    @staticmethod
    def _delete_rows(session, rows: Iterable) -> list[str]:
        rows = list(rows)
        for chunk in range(0, len(rows), 500):
            ids = [r.id for r in rows[chunk : chunk + 500]]
            session.execute(delete(GalleryImageRow).where(GalleryImageRow.id.in_(ids)))
        return [r.file for r in rows]

    def _remove_files(self, files: Iterable[str]) -> None:
        for file in files:
            for path in (self.root / file, self._thumb_path(file)):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # a file that cannot go stays; the row is gone either way
                    log.warning("could not remove gallery file %s: %s", path, exc)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, owner: str, image_id: str) -> GalleryImage | None:
        """The image, or None when it does not exist or belongs to another owner."""
        with self.db.session() as s:
            row = s.get(GalleryImageRow, image_id)
            return _image(row) if row is not None and row.owner_id == owner else None

    def list(
        self, owner: str, *, q: str | None = None, limit: int = 50, before: GalleryImage | None = None
    ) -> tuple[list[GalleryImage], bool]:
        """`owner`'s images newest first, those older than `before` only, matching `q` (a case-insensitive
        substring of the prompt or negative prompt); returns (at most `limit` images, whether more follow)."""
        t = GalleryImageRow
        query = select(t).where(t.owner_id == owner)
        if q:
            pattern, esc = _like(q), "\\"
            query = query.where(or_(t.prompt.ilike(pattern, escape=esc), t.negative_prompt.ilike(pattern, escape=esc)))
        if before is not None:
            query = query.where(
                or_(t.created_at < before.created, (t.created_at == before.created) & (t.id < before.id))
            )
        query = query.order_by(t.created_at.desc(), t.id.desc()).limit(limit + 1)
        with self.db.session() as s:
            rows = [_image(r) for r in s.scalars(query)]
        return rows[:limit], len(rows) > limit

    def count(self, owner: str) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(GalleryImageRow).where(GalleryImageRow.owner_id == owner))

    def read(self, image: GalleryImage) -> bytes | None:
        """The image's bytes; None when its file is missing."""
        return _read(self.root / image.file)

    def read_thumbnail(self, image: GalleryImage) -> bytes | None:
        return _read(self._thumb_path(image.file))

    def _thumb_path(self, file: str) -> Path:
        path = self.root / file
        return path.with_name(path.stem + ".thumb.webp")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
