"""The same storage on PostgreSQL: migrations round trip, keys, and the registry with two owners."""

from __future__ import annotations

import io

import pytest

from pictale.accounts.keys import KeyStore
from pictale.core.errors import AvatarExists
from pictale.storage.db import Database
from tests.avatars import files
from tests.avatars.conftest import blob_files, open_registry
from tests.avatars.postgres import fresh_database, postgres_server


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as url:
        yield url


def test_migrations_round_trip_on_postgres(pg_server):
    db = Database(fresh_database(pg_server, "migrations"))
    assert db.dialect == "postgresql"
    db.migrate()
    head = db.revision()
    assert head is not None
    db.downgrade("base")
    assert db.revision() is None
    db.migrate()
    assert db.revision() == head
    db.dispose()


def test_registry_and_keys_on_postgres(pg_server, tmp_path, sd15):
    url = fresh_database(pg_server, "registry").replace("postgresql+psycopg://", "postgresql://")
    registry = open_registry(tmp_path, db_url=url)
    try:
        keys = KeyStore(registry.db)
        (alice, alice_key), (bob, _) = keys.create("alice", admin=True), keys.create("bob")
        assert keys.verify(alice_key).id == alice.id and keys.has_keys()
        registry.create(alice.id, "face", "lucy", [("a.png", io.BytesIO(files.png()))])
        registry.create(bob.id, "face", "lucy", [("b.png", io.BytesIO(files.png(seed=1)))])
        lora = registry.create(
            alice.id, "lora", "toy", [("t.safetensors", io.BytesIO(files.lora_kohya(sd15)))], trigger_words="toy"
        )
        assert (lora.family, lora.trigger_words) == ("sd15", ("toy",))
        with pytest.raises(AvatarExists):
            registry.create(alice.id, "face", "lucy", [("a.png", io.BytesIO(files.png()))])
        assert [a.name for a in registry.list(alice.id)] == ["lucy", "toy"]
        assert registry.resolve(bob.id, "lora", "toy", 1) is None
        registry.update(alice.id, "face", "lucy", new_name="lucy2")
        registry.delete(alice.id, "face", "lucy2")
        assert registry.names(alice.id, "face") == [] and registry.names(bob.id, "face") == ["lucy"]
        assert len(blob_files(registry)) == 2
        keys.revoke(bob.id)
        assert [k.name for k in keys.list()] == ["alice"]
    finally:
        registry.db.dispose()
