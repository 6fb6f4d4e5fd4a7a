"""The content-addressed blob store: digest paths, atomic writes, limits, collection and its lock."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from pictale.storage.blobs import BlobStore, BlobTooLarge


def test_stage_commit_and_dedupe(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(3 * 1024 * 1024 + 5)  # several chunks
    staged = store.stage(io.BytesIO(data))
    digest = hashlib.sha256(data).hexdigest()
    assert (staged.digest, staged.size) == (digest, len(data))
    assert staged.path.parent == store.tmp and not store.exists(digest)
    path = store.commit(staged)
    assert path == tmp_path / "blobs" / digest[:2] / digest[2:]
    assert path.read_bytes() == data and not staged.path.exists()
    again = store.stage(io.BytesIO(data))
    assert store.commit(again) == path and not again.path.exists()
    assert list(store.digests()) == [digest]
    assert list(store.tmp.iterdir()) == []


def test_limit_removes_the_partial_file(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(BlobTooLarge):
        store.stage(io.BytesIO(b"x" * 2_000_001), limit=2_000_000)
    assert list(store.tmp.iterdir()) == []
    assert store.stage(io.BytesIO(b"x" * 10), limit=10).size == 10


def test_collect_keeps_only_referenced(tmp_path):
    store = BlobStore(tmp_path)
    keep = store.commit(store.stage_bytes(b"keep"))
    drop = store.commit(store.stage_bytes(b"drop"))
    (store.tmp / "stage-dead").write_bytes(b"half")
    with store.collecting():
        removed = store.collect([hashlib.sha256(b"keep").hexdigest()])
    assert sorted(removed) == sorted([hashlib.sha256(b"drop").hexdigest(), "tmp/stage-dead"])
    assert keep.exists() and not drop.exists() and not drop.parent.exists()


def test_collection_waits_for_writers(tmp_path):
    store = BlobStore(tmp_path)
    with store.writing(), store.writing(), store.collecting(blocking=False) as got:  # writers share
        assert got is False
    with store.collecting(blocking=False) as got:
        assert got is True


def test_digest_paths_are_checked(tmp_path):
    with pytest.raises(ValueError):
        BlobStore(tmp_path).path("../../etc/passwd")
