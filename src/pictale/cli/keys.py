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
    """Make a key and print it once (only its hash is stored). The first key must be an admin key: it
    takes over the avatars, characters and books made in open mode."""
    from pictale.accounts.lifecycle import create_key
    from pictale.core.errors import PictaleError

    settings, db = open_database(data_dir, database_url)
    try:
        new = create_key(db, name, admin=admin, basic_users=bool(settings.api_auth))
    except PictaleError as exc:
        raise fail(exc.message) from None
    finally:
        db.dispose()
    record = new.record
    role = "admin key" if record.is_admin else "key"
    console.print(f"created {role} {record.id} ({record.name}). It is shown only now: store it somewhere safe.")
    console.print(f"its webhook signing secret (also shown only now): {new.webhook_secret}")
    if new.adopted is not None:
        console.print(
            f"the first key: the server now needs a key on every request, and this key owns what was made "
            f"in open mode ({new.adopted.describe()})"
        )
        for item in new.adopted.kept:
            console.print(f"  kept by the local user (name already taken): {item}")
    typer.echo(new.key)


@app.command("list")
def list_keys(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Live keys (their prefixes, never the keys)."""
    from pictale.accounts.keys import KeyStore

    settings, db = open_database(data_dir, database_url)
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
        console.print(_no_keys_mode(settings))


def _no_keys_mode(settings: Any) -> str:
    if settings.api_auth:
        return "no live keys: only the --api-auth (PICTALE_API_AUTH) Basic users can use the server"
    return "no live keys: the server is open (local single user: every request is accepted)"


def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `pictale keys list`).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key at once. Revoking the last key reopens the server; that key's things go back to the
    local user."""
    from pictale.accounts.lifecycle import revoke_key
    from pictale.core.errors import PictaleError

    settings, db = open_database(data_dir, database_url)
    try:
        revoked = revoke_key(db, key_id, keep_an_admin=False)
    except PictaleError as exc:
        raise fail(exc.message) from None
    finally:
        db.dispose()
    console.print(f"revoked {key_id}")
    if revoked.reopened:
        console.print(f"that was the last key: {_no_keys_mode(settings)}")
        if revoked.returned is not None:
            console.print(f"its things now belong to the local user ({revoked.returned.describe()})")
        if not settings.api_auth:
            console.print("anyone who can reach the server can use it now; make a key to close it again")


app.command("revoke")(revoke)
app.command("rm", help="The same as `revoke`.")(revoke)


@app.command("webhook-secret")
def webhook_secret(
    owner: Annotated[
        str, typer.Argument(help="Whose secret: `local` (open mode), `basic:USER`, or a key id (with --rotate).")
    ] = "local",
    rotate: Annotated[bool, typer.Option("--rotate", help="Make a new secret (the old one stops signing).")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the secret that signs an owner's webhook deliveries (X-Pictale-Signature). A key's secret is
    shown once when the key is made; here it can only be replaced (--rotate)."""
    from pictale.accounts.keys import KeyStore
    from pictale.core.errors import PictaleError
    from pictale.storage.webhooks import SecretStore

    _, db = open_database(data_dir, database_url)
    try:
        is_key = owner not in ("local",) and not owner.startswith("basic:")
        if is_key:
            KeyStore(db).get(owner)  # a clear error for an unknown key id
            if not rotate:
                raise fail(f"the webhook secret of key {owner} was shown when it was made; use --rotate for a new one")
        secrets = SecretStore(db)
        value = secrets.rotate(owner) if rotate else secrets.get_or_create(owner)
    except PictaleError as exc:
        raise fail(exc.message) from None
    finally:
        db.dispose()
    typer.echo(value)
