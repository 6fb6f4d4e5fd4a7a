"""`pictale keys ...`: create, list and revoke API keys, directly on the data dir's database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Create, list and revoke API keys (the server runs open until the first is made).", no_args_is_help=True
)
console = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(help="Data dir (database, blobs).")]
DatabaseUrl = Annotated[
    str | None, typer.Option(help="Database URL (default sqlite in the data dir); postgresql://... works too.")
]


def open_database(data_dir: Path | None, database_url: str | None):
    """Settings from flags/environment, and the migrated database they name."""
    from pictale.cli.main import make_settings
    from pictale.storage.db import Database

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    db = Database(settings.db_url)
    db.migrate()
    return settings, db


@contextlib.contextmanager
def owned(data_dir: Path | None, database_url: str | None, key: str | None) -> Iterator[tuple[Any, Any, str]]:
    """(settings, database, owner id) for the key given, or the local user; pictale errors end the command
    with exit code 2; the database is closed afterwards."""
    from pictale.accounts.keys import KeyStore
    from pictale.core.errors import PictaleError
    from pictale.core.types import LOCAL_PRINCIPAL

    settings, db = open_database(data_dir, database_url)
    try:
        owner = LOCAL_PRINCIPAL
        if key:
            owner = KeyStore(db).verify(key)
            if owner is None:
                raise fail("--key is not a valid API key for this data dir")
        yield settings, db, owner.id
    except PictaleError as exc:
        raise fail(exc.message) from None
    finally:
        db.dispose()


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A label for the key, e.g. who or what uses it.")],
    admin: Annotated[bool, typer.Option("--admin", help="May create, list and revoke keys.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a key and print it once (only its hash is stored)."""
    from pictale.accounts.keys import KeyStore
    from pictale.core.errors import PictaleError

    _, db = open_database(data_dir, database_url)
    try:
        record, plaintext = KeyStore(db).create(name, admin=admin)
    except PictaleError as exc:
        raise fail(exc.message) from None
    finally:
        db.dispose()
    role = "admin key" if record.is_admin else "key"
    console.print(f"created {role} {record.id} ({record.name}). It is shown only now: store it somewhere safe.")
    typer.echo(plaintext)


@app.command("list")
def list_keys(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Live keys (their prefixes, never the keys)."""
    from pictale.accounts.keys import KeyStore

    _, db = open_database(data_dir, database_url)
    try:
        records = KeyStore(db).list()
    finally:
        db.dispose()
    table = Table(title="API keys")
    for col in ("id", "name", "prefix", "admin", "created"):
        table.add_column(col)
    for r in records:
        table.add_row(r.id, r.name, r.prefix + "...", "yes" if r.is_admin else "", str(r.created))
    Console().print(table)
    if not records:
        console.print("no keys: the server runs open (local single user) unless --api-auth is set")


@app.command("rm")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `pictale keys list`).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key at once."""
    from pictale.accounts.keys import KeyStore
    from pictale.core.errors import PictaleError

    _, db = open_database(data_dir, database_url)
    try:
        KeyStore(db).revoke(key_id)
    except PictaleError as exc:
        raise fail(exc.message) from None
    finally:
        db.dispose()
    console.print(f"revoked {key_id}")
