"""A content-addressed blob store: files named by their sha256 under ROOT/ab/cdef..., written atomically.

Writers stream into ROOT/tmp/ (same filesystem), fsync, then os.replace into place, so a blob path either
holds its complete content or does not exist. Which blobs are still needed is the database's business:
`collect(referenced)` removes everything else. A file lock keeps collection from racing with writers,
also across processes (the CLI and the server may share a data dir).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, collection is then best effort
    fcntl = None  # type: ignore[assignment]

CHUNK = 1024 * 1024
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlobTooLarge(Exception):
    """The stream went past the byte limit given to `stage` (the partial file is already removed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StagedBlob:
    """A fully written, fsynced temp file whose digest is known; `commit` moves it into the store."""

    path: Path
    digest: str
    size: int


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.hook: Callable[[str], None] | None = None
        """Test-only: called with "partial" after the first chunk of a stage is on disk (crash tests)."""

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    # -- writing ---------------------------------------------------------------------------------
    def stage(self, stream: BinaryIO, *, limit: int | None = None) -> StagedBlob:
        """Copy a stream to a temp file in the store, hashing as it goes; BlobTooLarge past `limit` bytes."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="stage-")
        path = Path(name)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise BlobTooLarge(limit)
                    digest.update(chunk)
                    out.write(chunk)
                    if self.hook is not None:
                        out.flush()
                        self.hook("partial")
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedBlob(path, digest.hexdigest(), size)

    def stage_bytes(self, data: bytes) -> StagedBlob:
        import io

        return self.stage(io.BytesIO(data))

    def commit(self, staged: StagedBlob) -> Path:
        """Move a staged file into place (atomic); an identical blob already there is kept and refreshed."""
        target = self.path(staged.digest)
        if target.is_file():
            staged.path.unlink(missing_ok=True)
            os.utime(target)  # a fresh mtime tells a concurrent collector this blob is wanted again
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)
        _fsync_dir(target.parent)
        return target

    def discard(self, staged: StagedBlob) -> None:
        staged.path.unlink(missing_ok=True)

    # -- reading and collection -------------------------------------------------------------------
    def digests(self) -> Iterator[str]:
        """Every complete blob in the store."""
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for f in sub.iterdir():
                digest = sub.name + f.name
                if _DIGEST.match(digest) and f.is_file():
                    yield digest

    def remove(self, digest: str) -> bool:
        path = self.path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty
        return True

    def collect(self, referenced: Iterable[str]) -> list[str]:
        """Remove blobs not in `referenced` and leftover temp files. Call under `collecting()`."""
        keep = set(referenced)
        removed = [d for d in list(self.digests()) if d not in keep and self.remove(d)]
        if self.tmp.is_dir():
            for f in self.tmp.iterdir():
                f.unlink(missing_ok=True)
                removed.append(f"tmp/{f.name}")
        return removed

    # -- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, mode: int, blocking: bool = True) -> Iterator[bool]:
        if fcntl is None:
            yield True
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock (also when the process dies)

    def writing(self) -> contextlib.AbstractContextManager[bool]:
        """Held from staging a blob until the row that references it is committed (shared: writers overlap)."""
        return self._lock(fcntl.LOCK_SH if fcntl else 0)

    def collecting(self, blocking: bool = True) -> contextlib.AbstractContextManager[bool]:
        """Exclusive: no writer is between staging and commit. Yields False when busy and not blocking."""
        return self._lock(fcntl.LOCK_EX if fcntl else 0, blocking)
