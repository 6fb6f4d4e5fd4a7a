"""API keys: shown once, stored as a hash, verified, listed, revoked."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from pictale.accounts.keys import KeyStore
from pictale.core.errors import InvalidRequest, KeyNotFound
from pictale.core.types import Principal
from pictale.storage.db import Database


@pytest.fixture
def keys(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    yield KeyStore(db)
    db.dispose()


def test_create_verify_and_only_the_hash_is_stored(keys):
    assert not keys.has_keys() and keys.count() == 0
    record, key = keys.create("alice", admin=True)
    assert key.startswith("pt-") and len(key) > 40 and record.prefix == key[:8]
    assert keys.verify(key) == Principal(record.id, "alice", True)
    assert keys.verify(key + "x") is None and keys.verify("") is None and keys.verify("Bearer " + key) is None
    with keys.db.engine.connect() as c:
        rows = [tuple(map(str, r)) for r in c.execute(text("SELECT * FROM api_keys"))]
    assert not any(key in v for row in rows for v in row)
    assert any(hashlib.sha256(key.encode()).hexdigest() in row for row in rows)
    _, other = keys.create("bob")
    assert other != key and keys.verify(other).is_admin is False


def test_list_and_revoke(keys):
    a, _ = keys.create("a")
    b, b_key = keys.create("b", admin=True)
    assert [k.id for k in keys.list()] == [a.id, b.id]
    assert keys.list()[1].to_json() == {
        "id": b.id,
        "name": "b",
        "prefix": b.prefix,
        "admin": True,
        "created": b.created,
    }
    keys.revoke(b.id)
    assert keys.verify(b_key) is None and [k.id for k in keys.list()] == [a.id]
    with pytest.raises(KeyNotFound):
        keys.revoke(b.id)
    with pytest.raises(KeyNotFound, match="no API key with id 'nope'"):
        keys.get("nope")
    keys.revoke(a.id)
    assert not keys.has_keys() and keys.count() == 0  # no live key: the server is open again


def test_names_are_checked(keys):
    with pytest.raises(InvalidRequest):
        keys.create("   ")
    with pytest.raises(InvalidRequest):
        keys.create("x" * 65)
