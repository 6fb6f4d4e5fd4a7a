"""A registry on a fresh SQLite database and blob store in tmp_path."""

from __future__ import annotations

import pytest

from pictale.avatars.registry import AvatarRegistry
from pictale.core.config import Settings
from pictale.storage.blobs import BlobStore
from pictale.storage.db import Database


def open_registry(data_dir, db_url: str | None = None, **overrides) -> AvatarRegistry:
    settings = Settings(data_dir=data_dir, database_url=db_url, **overrides)
    db = Database(settings.db_url)
    db.migrate()
    return AvatarRegistry(db, BlobStore(settings.blobs_path), settings)


@pytest.fixture
def registry(tmp_path):
    reg = open_registry(tmp_path)
    yield reg
    reg.db.dispose()


@pytest.fixture(scope="session")
def sd15(tiny_models):
    """The tiny SD 1.5 model folder (its configs give LoRA and embedding shapes)."""
    return tiny_models["sd15"]


def blob_files(registry: AvatarRegistry) -> list[str]:
    """Every file under the blob root except the lock (so tests can say "nothing new was stored")."""
    root = registry.blobs.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")
