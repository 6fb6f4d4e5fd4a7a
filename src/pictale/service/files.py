"""Expiring, unguessable links to generated images (`url` responses): `/v1/files/{token}`.

Files live under DATA_DIR/files; a link expires `ttl` seconds after it was made (the file's mtime), so
links survive a restart and die on time. Only images are ever stored or served here.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class FileStore:
    def __init__(self, root: Path, ttl_seconds: float) -> None:
        self.root = Path(root)
        self.ttl = ttl_seconds

    def put(self, data: bytes) -> str:
        """Store one encoded image and return its token (the link is `/v1/files/{token}`)."""
        kind = sniff(data)
        if kind is None:
            raise ValueError("only images are stored in the file store")
        self.root.mkdir(parents=True, exist_ok=True)
        token = f"{secrets.token_urlsafe(24)}.{'jpg' if kind == 'jpeg' else kind}"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.root / token)
        return token

    def get(self, token: str) -> tuple[Path, str] | None:
        """(path, media type) of a live link; None for unknown, malformed or expired tokens."""
        name, _, ext = token.rpartition(".")
        kind = "jpeg" if ext == "jpg" else ext
        if not name or kind not in MEDIA_TYPES or "/" in token or token.startswith("."):
            return None
        path = self.root / token
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        if age > self.ttl:
            path.unlink(missing_ok=True)
            return None
        return path, MEDIA_TYPES[kind]

    def purge(self) -> int:
        """Delete expired files (and stale temp files); returns how many went."""
        if not self.root.is_dir():
            return 0
        now, removed = time.time(), 0
        for path in self.root.iterdir():
            try:
                if now - path.stat().st_mtime > self.ttl:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed
