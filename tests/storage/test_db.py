"""The database: migrations to head on a fresh file, a downgrade/upgrade round trip, schema = tables.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import pictale.storage.books  # the tables of these modules join Base.metadata on import
import pictale.storage.gallery
import pictale.storage.trainings
import pictale.storage.webhooks  # noqa: F401
from pictale.storage.db import Database, alembic_config
from pictale.storage.tables import Base


def head(db: Database) -> str:
    return ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()


def test_fresh_database_is_upgraded_to_head(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'pictale.db'}")
    assert db.revision() is None
    db.migrate()
    assert db.revision() == head(db)
    assert {"api_keys", "avatars", "avatar_files"} <= set(inspect(db.engine).get_table_names())
    with db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
    db.migrate()  # idempotent: every start-up runs it
    db.dispose()


def test_downgrade_upgrade_round_trip(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    db.downgrade("base")
    assert db.revision() is None
    assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}
    db.migrate()
    assert db.revision() == head(db)
    db.dispose()


def test_migrations_are_packaged():
    from importlib.resources import files

    migrations = files("pictale") / "storage" / "migrations"
    assert (migrations / "env.py").is_file()
    assert any(p.name.endswith(".py") for p in (migrations / "versions").iterdir())
