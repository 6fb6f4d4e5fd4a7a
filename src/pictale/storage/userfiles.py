"""Files handed to the user (generated images, exported books): written atomically, with the permissions a
plain `open()` gives (0o666 less the umask), unlike `tempfile.mkstemp`'s private 0o600.

Files only the server reads (the blob store, `url` links) keep their private modes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> Path:
    """Write `data` to a sibling temp file, fsync, then rename over `path`: a reader or a crash never sees half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like a plain open()
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
