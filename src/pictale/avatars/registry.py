"""The avatar registry: create, list, show, rename, delete and resolve avatars, per owner.

An owner never sees another owner's avatars: every query is filtered by owner, and a miss is a plain 404.
Creating is atomic: files are validated in the blob store's staging area, moved into place, and only then is
one transaction committed with the avatar row and its file rows. A crash at any point leaves a complete avatar
or none; blobs that no row references are removed by `gc()` (run at start-up).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pictale.avatars import tensors, validate
from pictale.core.config import Settings
from pictale.core.errors import AvatarExists, AvatarNotFound, InvalidRequest, InvalidUpload, UploadTooLarge
from pictale.core.types import AvatarKind, AvatarRef
from pictale.storage.blobs import BlobStore, BlobTooLarge, StagedBlob
from pictale.storage.db import Database
from pictale.storage.tables import Avatar, AvatarFile

PoseDetector = Callable[[Image.Image], Image.Image]
THUMBNAIL_SIZE = 256


def internal_token(digest: str) -> str:
    """The token the engine registers for an embedding: unique per content, so users never collide."""
    return f"<be-emb-{digest[:12]}>"


@dataclass(frozen=True)
class AvatarInfo:
    """One avatar as listings show it."""

    kind: AvatarKind
    name: str
    size: int
    created: int
    trigger_words: tuple[str, ...]
    token: str | None
    family: str | None
    cross_attention_dim: int | None
    filenames: tuple[str, ...]
    digest: str

    def to_json(self) -> dict:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "size": self.size,
            "created": self.created,
            "trigger_words": list(self.trigger_words),
            "token": self.token,
            "family": self.family,
            "files": len(self.filenames),
        }


def _info(row: Avatar) -> AvatarInfo:
    return AvatarInfo(
        kind=AvatarKind(row.kind),
        name=row.name,
        size=row.size,
        created=row.created_at,
        trigger_words=tuple(row.trigger_words or ()),
        token=row.token,
        family=row.family,
        cross_attention_dim=row.cross_attention_dim,
        filenames=tuple(f.filename for f in row.files),
        digest=row.digest,
    )


@dataclass
class _Checked:
    """A staged upload that passed validation."""

    filename: str
    staged: StagedBlob
    family: str | None = None
    cross_attention_dim: int | None = None


class AvatarRegistry:
    def __init__(
        self, db: Database, blobs: BlobStore, settings: Settings, pose_detector: PoseDetector | None = None
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.pose_detector = pose_detector
        self.hook: Callable[[str], None] | None = None
        """Test-only: called with "blobs-written" between moving blobs into place and the commit."""

    # -- create ----------------------------------------------------------------------------------
    def create(
        self,
        owner_id: str,
        kind: str | AvatarKind,
        name: str,
        files: Sequence[tuple[str | None, BinaryIO]],
        *,
        trigger_words: str | Sequence[str] | None = None,
        token: str | None = None,
    ) -> AvatarInfo:
        """Validate and store a new avatar; `files` are (client file name, readable stream) pairs."""
        kind = validate.parse_kind(kind)
        name = validate.check_name(name)
        words = validate.parse_trigger_words(trigger_words)
        token = self._check_fields(kind, words, token, default_token=name)
        names = [validate.clean_filename(f, i) for i, (f, _) in enumerate(files)]
        self._check_count(kind, len(files))
        if kind in validate.FILE_KINDS:
            validate.check_tensor_filename(names[0], kind)
        with self.db.session() as s:
            self._check_free(s, owner_id, kind, name, token)

        with self.blobs.writing():
            checked: list[_Checked] = []
            try:
                for filename, (_, stream) in zip(names, files, strict=True):
                    checked.append(self._check(kind, filename, self._stage(kind, filename, stream)))
                for c in checked:
                    self.blobs.commit(c.staged)
                if self.hook is not None:
                    self.hook("blobs-written")
                return self._insert(owner_id, kind, name, words, token, checked)
            finally:
                for c in checked:
                    self.blobs.discard(c.staged)  # no-op for committed ones: they were moved

    def _check_fields(self, kind: AvatarKind, words: tuple[str, ...], token: str | None, default_token: str):
        if words and kind not in validate.FILE_KINDS:
            raise InvalidRequest("trigger_words only apply to lora and embedding avatars", param="trigger_words")
        if kind is AvatarKind.EMBEDDING:
            return validate.check_token(token or default_token)
        if token:
            raise InvalidRequest("token only applies to embedding avatars", param="token")
        return None

    def _check_count(self, kind: AvatarKind, n: int) -> None:
        if n == 0:
            raise InvalidUpload("no files uploaded: send the avatar's file(s) in the `files` field", param="files")
        if kind in validate.IMAGE_KINDS and n > self.settings.max_upload_images:
            raise InvalidUpload(
                f"too many images: {n} files, at most {self.settings.max_upload_images} per avatar (max_upload_images)",
                param="files",
            )
        if kind in (AvatarKind.POSE, AvatarKind.LORA, AvatarKind.EMBEDDING) and n != 1:
            raise InvalidUpload(f"a {kind.value} avatar is exactly one file, got {n}", param="files")

    def _check_free(self, s, owner_id: str, kind: AvatarKind, name: str | None, token: str | None, avatar_id=-1):
        """409 when the owner already has this name (or embedding token) for this kind."""
        mine = select(Avatar).where(Avatar.owner_id == owner_id, Avatar.kind == kind.value, Avatar.id != avatar_id)
        if name is not None and s.scalar(mine.where(Avatar.name == name)) is not None:
            raise AvatarExists(f"you already have a {kind.value} avatar named {name!r}", param="name")
        if token is not None and s.scalar(mine.where(Avatar.token == token)) is not None:
            raise AvatarExists(f"you already have an embedding with the token {token!r}", param="token")

    def _stage(self, kind: AvatarKind, filename: str, stream: BinaryIO) -> StagedBlob:
        if kind in validate.FILE_KINDS:
            limit_mb, what = self.settings.max_lora_mb, f"{kind.value} files (max_lora_mb)"
        else:
            limit_mb, what = validate.MAX_IMAGE_MB, "images"
        try:
            return self.blobs.stage(stream, limit=limit_mb * 1024 * 1024)
        except BlobTooLarge:
            raise UploadTooLarge(f"{filename}: larger than the {limit_mb} MB limit for {what}", param="files") from None

    def _check(self, kind: AvatarKind, filename: str, staged: StagedBlob) -> _Checked:
        try:
            if kind is AvatarKind.LORA:
                info = tensors.inspect_lora(staged.path, filename)
                return _Checked(filename, staged, info.family, info.cross_attention_dim)
            if kind is AvatarKind.EMBEDDING:
                info = tensors.inspect_embedding(staged.path, filename)
                return _Checked(filename, staged, info.family, info.cross_attention_dim)
            validate.check_image(staged.path, filename, self.settings.max_image_pixels)
            if kind is AvatarKind.POSE:
                return self._pose(filename, staged)
            return _Checked(filename, staged)
        except BaseException:
            self.blobs.discard(staged)
            raise

    def _pose(self, filename: str, staged: StagedBlob) -> _Checked:
        with Image.open(staged.path) as im:
            if validate.looks_like_skeleton(im):
                return _Checked(filename, staged)
            if self.pose_detector is None:
                raise InvalidUpload(
                    f"{filename}: a pose avatar needs an OpenPose skeleton image (coloured limbs on a black "
                    "background), and this looks like a photo. To turn photos into skeletons, install OpenPose "
                    f"detector weights in {self.settings.openpose_path}",
                    param="files",
                )
            skeleton = self.pose_detector(im.convert("RGB"))
        if not validate.looks_like_skeleton(skeleton):
            raise InvalidUpload(f"{filename}: no person found in the photo to make a pose from", param="files")
        buf = io.BytesIO()
        skeleton.save(buf, format="PNG")
        self.blobs.discard(staged)
        return _Checked(f"{Path(filename).stem}-pose.png", self.blobs.stage_bytes(buf.getvalue()))

    def _insert(self, owner_id, kind, name, words, token, checked: list[_Checked]) -> AvatarInfo:
        digests = [c.staged.digest for c in checked]
        row = Avatar(
            owner_id=owner_id,
            kind=kind.value,
            name=name,
            token=token,
            family=checked[0].family,
            cross_attention_dim=checked[0].cross_attention_dim,
            trigger_words=list(words),
            digest=hashlib.sha256("".join(digests).encode()).hexdigest(),
            size=sum(c.staged.size for c in checked),
            created_at=int(time.time()),
            files=[
                AvatarFile(position=i, digest=c.staged.digest, filename=c.filename, size=c.staged.size)
                for i, c in enumerate(checked)
            ],
        )
        try:
            with self.db.session() as s:
                s.add(row)
        except IntegrityError:
            # lost a race with a concurrent create of the same name; the blobs are left for gc()
            raise AvatarExists(f"you already have a {kind.value} avatar named {name!r}", param="name") from None
        return _info(row)

    # -- read ------------------------------------------------------------------------------------
    def _row(self, s, owner_id: str, kind: str | AvatarKind, name: str) -> Avatar:
        kind = validate.parse_kind(kind)
        row = s.scalar(
            select(Avatar).where(
                Avatar.owner_id == owner_id, Avatar.kind == kind.value, Avatar.name == str(name).lower()
            )
        )
        if row is None:
            raise AvatarNotFound(f"no {kind.value} avatar named {name!r}")
        return row

    def get(self, owner_id: str, kind: str | AvatarKind, name: str) -> AvatarInfo:
        with self.db.session() as s:
            return _info(self._row(s, owner_id, kind, name))

    def list(self, owner_id: str, kind: str | AvatarKind | None = None) -> list[AvatarInfo]:
        query = select(Avatar).where(Avatar.owner_id == owner_id)
        if kind:
            query = query.where(Avatar.kind == validate.parse_kind(kind).value)
        with self.db.session() as s:
            return [_info(r) for r in s.scalars(query.order_by(Avatar.kind, Avatar.name))]

    def names(self, owner_id: str, kind: str | AvatarKind) -> list[str]:
        """The owner's avatar names of one kind (for "did you mean" suggestions)."""
        kind = validate.parse_kind(kind)
        with self.db.session() as s:
            query = select(Avatar.name).where(Avatar.owner_id == owner_id, Avatar.kind == kind.value)
            return sorted(s.scalars(query))

    def tokens(self, owner_id: str) -> dict[str, str]:
        """The owner's embedding tokens as the user chose them -> avatar name."""
        with self.db.session() as s:
            query = select(Avatar.token, Avatar.name).where(
                Avatar.owner_id == owner_id, Avatar.kind == AvatarKind.EMBEDDING.value
            )
            return {t: n for t, n in s.execute(query) if t}

    def resolve(self, owner_id: str, kind: str | AvatarKind, name: str, weight: float) -> AvatarRef | None:
        """What the engine needs to apply an avatar, or None when the owner has no such avatar."""
        try:
            with self.db.session() as s:
                row = self._row(s, owner_id, kind, name)
                return AvatarRef(
                    kind=AvatarKind(row.kind),
                    name=row.name,
                    weight=weight,
                    files=tuple(self.blobs.path(f.digest) for f in row.files),
                    digest=row.digest,
                    token=internal_token(row.digest) if row.kind == AvatarKind.EMBEDDING.value else None,
                    family=row.family,
                    trigger_words=tuple(row.trigger_words or ()),
                )
        except AvatarNotFound:
            return None

    def thumbnail(self, owner_id: str, kind: str | AvatarKind, name: str, size: int = THUMBNAIL_SIZE) -> bytes:
        """A PNG thumbnail of the avatar's first image (image kinds only)."""
        with self.db.session() as s:
            row = self._row(s, owner_id, kind, name)
            if AvatarKind(row.kind) not in validate.IMAGE_KINDS:
                raise AvatarNotFound(f"{row.kind} avatars have no thumbnail")
            path = self.blobs.path(row.files[0].digest)
        with Image.open(path) as im:
            im.thumbnail((size, size))
            out = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        return buf.getvalue()

    # -- update and delete -----------------------------------------------------------------------
    def update(
        self,
        owner_id: str,
        kind: str | AvatarKind,
        name: str,
        *,
        trigger_words: str | Sequence[str] | None = None,
        token: str | None = None,
        new_name: str | None = None,
    ) -> AvatarInfo:
        """Change trigger words, the embedding token, or the name (rename)."""
        kind = validate.parse_kind(kind)
        with self.db.session() as s:
            row = self._row(s, owner_id, kind, name)
            if new_name is not None:
                new_name = validate.check_name(new_name)
            words = validate.parse_trigger_words(trigger_words) if trigger_words is not None else None
            self._check_fields(kind, words or (), token, default_token=row.token or row.name)
            if token is not None:
                token = validate.check_token(token)
            self._check_free(s, owner_id, kind, new_name, token, avatar_id=row.id)
            if new_name is not None:
                row.name = new_name
            if words is not None:
                row.trigger_words = list(words)
            if token is not None:
                row.token = token
            try:
                s.flush()
            except IntegrityError:
                raise AvatarExists(f"you already have a {kind.value} avatar named {new_name!r}") from None
            return _info(row)

    def delete(self, owner_id: str, kind: str | AvatarKind, name: str) -> None:
        """Delete the avatar; its blobs go at once unless another avatar uses them or a writer is busy."""
        with self.db.session() as s:
            row = self._row(s, owner_id, kind, name)
            digests = {f.digest for f in row.files}
            s.delete(row)
        with self.blobs.collecting(blocking=False) as locked:
            if locked:
                still = self._referenced(digests)
                for d in digests - still:
                    self.blobs.remove(d)

    # -- garbage collection ----------------------------------------------------------------------
    def _referenced(self, among: set[str] | None = None) -> set[str]:
        query = select(AvatarFile.digest).distinct()
        if among is not None:
            query = query.where(AvatarFile.digest.in_(among))
        with self.db.session() as s:
            return set(s.scalars(query))

    def gc(self) -> list[str]:
        """Remove blobs no avatar references and interrupted uploads; returns what was removed."""
        with self.blobs.collecting():
            return self.blobs.collect(self._referenced())
