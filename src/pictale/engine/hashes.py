"""sha256 of checkpoint files, cached in `<dir>/.pictale-hashes.json` by path, size and mtime_ns."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

HASH_CACHE_NAME = ".pictale-hashes.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Full-file sha256, as A1111 computes checkpoint hashes (its short hash is the first 10 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """Hashes of the files under one directory; a file is re-hashed only when its size or mtime changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / HASH_CACHE_NAME
        self._entries = self._read()
        self._dirty = False

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable hash cache %s: %s", self.path, exc)
            return {}
        entries = data.get("files") if isinstance(data, dict) else None
        return entries if isinstance(entries, dict) else {}

    def _key(self, path: Path) -> str:
        path = Path(path).absolute()
        try:
            return path.relative_to(self.directory.absolute()).as_posix()
        except ValueError:
            return str(path)

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the cache when size and mtime_ns still match."""
        stat = Path(path).stat()
        key = self._key(path)
        cached = self._entries.get(key)
        if (
            isinstance(cached, dict)
            and cached.get("size") == stat.st_size
            and cached.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(cached.get("sha256"), str)
        ):
            return str(cached["sha256"])
        logger.info("hashing %s (%d bytes)", path, stat.st_size)
        digest = sha256_file(path)
        self._entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        self._dirty = True
        return digest

    def save(self) -> None:
        """Write the cache atomically (temp file + os.replace); a read-only directory only costs a warning."""
        if not self._dirty:
            return
        payload = json.dumps({"version": 1, "files": self._entries}, indent=1, sort_keys=True)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".pictale-hashes-", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            logger.warning("cannot write hash cache %s: %s", self.path, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
