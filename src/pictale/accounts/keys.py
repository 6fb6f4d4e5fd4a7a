"""API keys: `pt-<random>` shown once at creation; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from pictale.core.errors import InvalidRequest, KeyNotFound
from pictale.core.types import Principal
from pictale.storage.db import Database
from pictale.storage.tables import ApiKey

KEY_PREFIX = "pt-"
MAX_NAME = 64


def hash_key(plaintext: str) -> str:
    # The key is 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """What listings show about a key (never the key itself)."""

    id: str
    name: str
    prefix: str
    is_admin: bool
    created: int
    revoked: int | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.id, self.name, self.is_admin)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "admin": self.is_admin,
            "created": self.created,
        }


def _record(row: ApiKey) -> KeyRecord:
    return KeyRecord(row.id, row.name, row.prefix, row.is_admin, row.created_at, row.revoked_at)


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, admin: bool = False) -> tuple[KeyRecord, str]:
        """Make a key; returns its record and the plaintext, which is not stored anywhere."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidRequest(f"a key name must be 1-{MAX_NAME} characters", param="name")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            name=name,
            key_hash=hash_key(plaintext),
            prefix=plaintext[:8],
            is_admin=bool(admin),
            created_at=int(time.time()),
        )
        with self.db.session() as s:
            s.add(row)
        return _record(row), plaintext

    def verify(self, plaintext: str) -> Principal | None:
        """The principal of a live key, or None (unknown, revoked, or not shaped like a key)."""
        if not plaintext or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 128:
            return None
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext), ApiKey.revoked_at.is_(None)))
            return Principal(row.id, row.name, row.is_admin) if row else None

    def list(self) -> list[KeyRecord]:
        """Live keys, oldest first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at, ApiKey.name, ApiKey.id)
            )
            return [_record(r) for r in rows]

    def get(self, key_id: str) -> KeyRecord:
        with self.db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                raise KeyNotFound(f"no API key with id {key_id!r}")
            return _record(row)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key at once (the row stays, marked revoked)."""
        with self.db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                raise KeyNotFound(f"no API key with id {key_id!r}")
            row.revoked_at = int(time.time())
            return _record(row)

    def has_keys(self) -> bool:
        """True while a live key exists; with none (never made, or all revoked) the server is open."""
        with self.db.session() as s:
            return s.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def count(self) -> int:
        """Live keys."""
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0
