"""Crash safety: a create SIGKILLed at any point leaves a complete avatar or none, and gc cleans up."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from tests.avatars.conftest import blob_files, open_registry

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    from pictale.avatars.registry import AvatarRegistry
    from pictale.core.config import Settings
    from pictale.storage.blobs import BlobStore
    from pictale.storage.db import Database

    data_dir, upload, point = sys.argv[1:4]
    settings = Settings(data_dir=data_dir)
    db = Database(settings.db_url)
    db.migrate()
    registry = AvatarRegistry(db, BlobStore(settings.blobs_path), settings)

    def die(at):
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    registry.blobs.hook = die                     # "partial": mid-way through writing the blob
    registry.hook = die                           # "blobs-written": blobs in place, no row yet
    event.listen(Session, "after_flush", lambda *a: die("flushed"))  # rows sent, COMMIT not yet
    with open(upload, "rb") as f:
        registry.create("k1", "face", "lucy", [("big.png", f)])
    die("committed")
    print("survived")
    """
)


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> bytes:
    """A noisy PNG of several 1 MB chunks, so a crash can land mid-write."""
    pixels = np.random.default_rng(0).integers(0, 256, (900, 1000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    assert len(buf.getvalue()) > 2 * 1024 * 1024
    return buf.getvalue()


@pytest.mark.parametrize(
    ("point", "complete"), [("partial", False), ("blobs-written", False), ("flushed", False), ("committed", True)]
)
def test_crash_leaves_all_or_nothing(tmp_path, big_png, point, complete):
    upload = tmp_path / "upload.png"
    upload.write_bytes(big_png)
    data_dir = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), str(upload), point],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == -9, r.stdout + r.stderr

    registry = open_registry(data_dir)
    try:
        avatars = registry.list("k1")
        with registry.db.engine.connect() as c:
            orphans = c.execute(
                text("SELECT count(*) FROM avatar_files WHERE avatar_id NOT IN (SELECT id FROM avatars)")
            ).scalar()
            file_rows = c.execute(text("SELECT count(*) FROM avatar_files")).scalar()
        assert orphans == 0
        if complete:
            assert [a.name for a in avatars] == ["lucy"] and file_rows == 1
            ref = registry.resolve("k1", "face", "lucy", 1.0)
            assert ref.files[0].read_bytes() == big_png
        else:
            assert avatars == [] and file_rows == 0
            if point == "partial":
                assert [f for f in blob_files(registry) if f.startswith("tmp/")], "expected a half-written temp file"
            else:
                assert len(blob_files(registry)) == 1  # the complete but unreferenced blob
        registry.gc()
        assert blob_files(registry) == (["/".join(p.parts[-2:]) for p in ref.files] if complete else [])
        # and the name is usable (again or still) afterwards
        if not complete:
            registry.create("k1", "face", "lucy", [("big.png", io.BytesIO(big_png))])
    finally:
        registry.db.dispose()
