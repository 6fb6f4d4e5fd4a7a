"""The persistent pieces (database, keys, avatars, characters) built once from Settings, for the app and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pictale.accounts.keys import KeyStore
from pictale.avatars.characters import CharacterStore
from pictale.avatars.registry import AvatarRegistry
from pictale.core.config import Settings
from pictale.storage.blobs import BlobStore
from pictale.storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class Stores:
    db: Database
    keys: KeyStore
    avatars: AvatarRegistry
    characters: CharacterStore

    def close(self) -> None:
        self.db.dispose()


def open_stores(settings: Settings) -> Stores:
    """Migrate the database and open the registry; a photo becomes a pose skeleton when a detector exists."""
    db = Database(settings.db_url)
    db.migrate()
    detector = None
    if settings.openpose_path.is_dir():
        from pictale.engine.adapters.pose import load_pose_detector  # only when weights may be there: it imports torch

        detector = load_pose_detector(settings.openpose_path)
    avatars = AvatarRegistry(db, BlobStore(settings.blobs_path), settings, pose_detector=detector)
    return Stores(db=db, keys=KeyStore(db), avatars=avatars, characters=CharacterStore(db))
