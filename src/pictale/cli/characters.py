"""`pictale characters ...`: story characters (`<be-char:name>`) on the data dir, per API key, no server needed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pictale.cli.avatars import Key
from pictale.cli.keys import DatabaseUrl, DataDir, fail, owned

app = typer.Typer(
    help="Story characters: a description and avatars that <be-char:NAME> brings into a prompt, per API key.",
    no_args_is_help=True,
)
console = Console(stderr=True)

Description = Annotated[str | None, typer.Option(help="The prompt prefix: what the character looks like.")]
Avatars = Annotated[str | None, typer.Option(help='Avatar tokens only, e.g. "<be-face:lucy:0.4> <be-lora:toy:0.8>".')]
Negative = Annotated[str | None, typer.Option("--negative", help="Added to the negative prompt of every picture.")]
Seed = Annotated[int | None, typer.Option(help="A fixed seed: requests with seed -1 use it, so pictures repeat.")]


@contextlib.contextmanager
def opened(data_dir: Path | None, database_url: str | None, key: str | None) -> Iterator[tuple]:
    """(store, owner id) for the key given, or the local user; errors end the command with exit code 2."""
    from pictale.avatars.characters import CharacterStore

    with owned(data_dir, database_url, key) as (_settings, db, owner):
        yield CharacterStore(db), owner


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="1-64 characters: letters, digits, _ . -")],
    description: Description = None,
    avatars: Avatars = None,
    negative: Negative = None,
    seed: Seed = None,
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a character (with --seed its seed policy is "fixed")."""
    with opened(data_dir, database_url, key) as (store, owner):
        info = store.create(owner, name, description=description, avatars=avatars, negative_prompt=negative, seed=seed)
    console.print(f"added character {info.name!r}: use <be-char:{info.name}> in a prompt")


@app.command("list")
def list_characters(key: Key = None, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Your characters."""
    with opened(data_dir, database_url, key) as (store, owner):
        characters = store.list(owner)
    table = Table(title="characters")
    for col in ("name", "description", "avatars", "seed"):
        table.add_column(col)
    for info in characters:
        c = info.character
        text = c.description if len(c.description) <= 60 else c.description[:57] + "..."
        table.add_row(c.name, text, c.avatars, str(c.seed) if c.seed_policy == "fixed" else "random")
    Console(width=200).print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument()],
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """One character as JSON (the same object as GET /v1/characters/NAME)."""
    with opened(data_dir, database_url, key) as (store, owner):
        info = store.info(owner, name)
    typer.echo(json.dumps(info.to_json(), indent=2, ensure_ascii=False))


@app.command("edit")
def edit(
    name: Annotated[str, typer.Argument()],
    description: Description = None,
    avatars: Avatars = None,
    negative: Negative = None,
    seed: Seed = None,
    random_seed: Annotated[bool, typer.Option("--random-seed", help="Drop the fixed seed: pictures vary.")] = False,
    rename: Annotated[str | None, typer.Option(help="A new name.")] = None,
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change the fields given; the others stay."""
    if random_seed and seed is not None:
        raise fail("--seed and --random-seed contradict each other")
    changes: dict[str, Any] = {"description": description, "avatars": avatars, "negative_prompt": negative}
    changes = {k: v for k, v in changes.items() if v is not None}
    if seed is not None:
        changes["seed"] = seed
    if random_seed:
        changes["seed_policy"] = "random"
    with opened(data_dir, database_url, key) as (store, owner):
        info = store.update(owner, name, new_name=rename, **changes)
    console.print(f"updated character {info.name!r}")


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument()],
    key: Key = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a character (its avatars stay)."""
    with opened(data_dir, database_url, key) as (store, owner):
        info = store.delete(owner, name)
    console.print(f"removed character {info.name!r}")
