"""The rules around making and revoking keys, shared by `POST/DELETE /v1/keys` and `pictale keys`.

- The first key (no live key exists) must be an admin key, and it adopts what the open-mode local user made
  (avatars, characters, books): those do not vanish when the server closes. With `--api-auth` the server
  was not open and its Basic users manage keys, so a first key may be an ordinary one (it adopts nothing).
- Each key gets a webhook signing secret, shown once with the key.
- Revoking the last live key reopens the server (no keys: open mode); that key's things go back to the
  local user. Over HTTP the last admin key cannot be revoked, so only the CLI on the server reopens it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pictale.accounts.keys import KeyRecord, KeyStore
from pictale.accounts.ownership import Transfer, transfer
from pictale.core.errors import InvalidRequest, LastAdminKey
from pictale.core.types import LOCAL_PRINCIPAL
from pictale.storage.db import Database
from pictale.storage.webhooks import SecretStore

LOCAL_OWNER = LOCAL_PRINCIPAL.id
_lock = threading.Lock()  # "is this the first key?" and the adoption happen together within a process


@dataclass(frozen=True)
class NewKey:
    record: KeyRecord
    key: str
    webhook_secret: str
    adopted: Transfer | None
    """The first key: what it took over from the local user; None for later keys."""

    def to_json(self) -> dict:
        """The creation response: the only time the key and its webhook secret are shown."""
        extra = {"key": self.key, "webhook_secret": self.webhook_secret}
        return self.record.to_json() | extra | {"adopted": self.adopted.to_json() if self.adopted else None}


@dataclass(frozen=True)
class Revoked:
    record: KeyRecord
    reopened: bool
    """No live key is left: the server is open again (unless `--api-auth` is set)."""
    returned: Transfer | None
    """When reopened: the revoked key's things, now the local user's."""


def create_key(db: Database, name: str, admin: bool = False, *, basic_users: bool = False) -> NewKey:
    """Make a key and its webhook secret; the first key must be admin (unless `basic_users`: `--api-auth`
    is set) and, when admin, adopts the local user's things."""
    keys = KeyStore(db)
    with _lock:
        first = keys.count() == 0
        if first and not admin and not basic_users:
            raise InvalidRequest(
                "the first API key must be an admin key (admin: true, or `pictale keys create NAME --admin`): "
                "it manages the other keys and takes over what was made in open mode",
                param="admin",
            )
        record, plaintext = keys.create(name, admin=admin)
        secret = SecretStore(db).rotate(record.id)
        adopted = None
        if first and admin:
            with db.session() as s:
                adopted = transfer(s, LOCAL_OWNER, record.id)
    return NewKey(record, plaintext, secret, adopted)


def revoke_key(db: Database, key_id: str, *, keep_an_admin: bool) -> Revoked:
    """Revoke a key; `keep_an_admin` (HTTP) refuses to revoke the last live admin key with a 409."""
    keys = KeyStore(db)
    with _lock:
        record = keys.get(key_id)
        others = [k for k in keys.list() if k.id != key_id]
        if keep_an_admin and record.is_admin and not any(k.is_admin for k in others):
            raise LastAdminKey(
                f"{key_id} is the last admin key: revoking it over HTTP would leave nobody to manage keys. "
                "Make another admin key first, or revoke it with `pictale keys revoke` on the server "
                "(with no key left the server is open again)",
                param="key_id",
            )
        record = keys.revoke(key_id)
        returned = None
        if not others:
            with db.session() as s:
                returned = transfer(s, key_id, LOCAL_OWNER)
    return Revoked(record, not others, returned)
