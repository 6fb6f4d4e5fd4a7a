"""`pictale avatars ...`: add, list, show and remove avatars directly on the data dir (no server needed)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pictale.cli.keys import DatabaseUrl, DataDir, fail, owned

app = typer.Typer(help="Face, style and pose images, LoRAs and embeddings, per API key.", no_args_is_help=True)
console = Console(stderr=True)

Key = Annotated[
    str | None,
    typer.Option("--key", envvar="PICTALE_API_KEY", help="Act as this API key's owner (default: the local user)."),
]


@contextlib.contextmanager
def opened(data_dir: Path | None, database_url: str | None, key: str | None) -> Iterator[tuple]:
    """(registry, owner id) for the key given, or the local user; errors end the command with exit code 2."""
    from pictale.avatars.registry import AvatarRegistry
    from pictale.storage.blobs import BlobStore

    with owned(data_dir, database_url, key) as (settings, db, owner):
        yield AvatarRegistry(db, BlobStore(settings.blobs_path), settings), owner


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


@app.command("add")
def add(
    kind: Annotated[str, typer.Argument(help="face, style, pose, lora or embedding.")],
    name: Annotated[str, typer.Argument(help="One word: a-z, 0-9, _ (1-32 characters).")],
    files: Annotated[list[Path], typer.Argument(help="Image(s), or one .safetensors for lora/embedding.")],
    trigger_words: Annotated[str | None, typer.Option(help='Comma separated, e.g. "toy_face, blue".')] = None,
    token: Annotated[str | None, typer.Option(help="Embeddings: the prompt token (default: the name).")] = None,
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Validate and store an avatar."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    with opened(data_dir, database_url, key) as (registry, owner), contextlib.ExitStack() as stack:
        streams = [(f.name, stack.enter_context(f.open("rb"))) for f in files]
        info = registry.create(owner, kind, name, streams, trigger_words=trigger_words, token=token)
    console.print(f"added {info.kind.value} avatar {info.name!r}: {len(info.filenames)} file(s), {_size(info.size)}")


@app.command("list")
def list_avatars(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Your avatars."""
    with opened(data_dir, database_url, key) as (registry, owner):
        avatars = registry.list(owner, kind)
    table = Table(title="avatars")
    for col in ("kind", "name", "files", "size", "family", "trigger words / token"):
        table.add_column(col)
    for a in avatars:
        extra = a.token if a.token else ", ".join(a.trigger_words)
        table.add_row(a.kind.value, a.name, str(len(a.filenames)), _size(a.size), a.family or "", extra)
    Console(width=200).print(table)


@app.command("show")
def show(
    kind: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Argument()],
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """One avatar as JSON (the same fields as GET /v1/avatars/KIND/NAME, plus its file names)."""
    with opened(data_dir, database_url, key) as (registry, owner):
        info = registry.get(owner, kind, name)
    typer.echo(json.dumps(info.to_json() | {"filenames": list(info.filenames)}, indent=2))


@app.command("rm")
def remove(
    kind: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Argument()],
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete an avatar and its files."""
    with opened(data_dir, database_url, key) as (registry, owner):
        registry.delete(owner, kind, name)
    console.print(f"removed {kind} avatar {name!r}")
