"""`pictale train PHOTOS_DIR --name sasha --kind face`: a LoRA trained locally, registered as an avatar.

The same service as `POST /v1/trainings` (same checks, same chunks on the worker, same resume), on the data dir,
with a progress bar. Ctrl-C stops between two steps: the training resumes with `--resume ID`, or by itself when
`pictale serve` starts on the same data dir.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pictale.cli.output import console, fail

PHOTO_FILES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".txt")


def _factory() -> Any:
    """The trainer (None: the real one, `training.runner`); tests put a fake here."""
    return None


def train(
    photos_dir: Annotated[
        Path | None, typer.Argument(help="Folder of 20-40 photos (and optional .txt captions).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The LoRA avatar's name: <be-lora:NAME:0.8>.")] = None,
    kind: Annotated[str, typer.Option(help="face, character, style or object (the preset).")] = "face",
    trigger: Annotated[str | None, typer.Option(help="Trigger word (default NAME_CLASS, e.g. sasha_person).")] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Base checkpoint: path, hub id or name (SD 1.5, SDXL, FLUX.1 dev).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default: the preset's).")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: the preset's).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default: the preset's).")] = None,
    resolution: Annotated[int | None, typer.Option(help="Training resolution (default 512 SD 1.5, else 1024).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default random).")] = None,
    character: Annotated[str | None, typer.Option(help="Also make a character with this name from the LoRA.")] = None,
    resume: Annotated[str | None, typer.Option(help="Go on with this training id instead of starting one.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir (models, database, trainings).")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default sqlite in the data dir).")] = None,
    key: Annotated[str | None, typer.Option(help="Train for this API key (its avatars and characters).")] = None,
) -> None:
    """Train a LoRA from a folder of photos on this machine and register it as an avatar (no server)."""
    from pictale.cli.book import _owner
    from pictale.cli.main import make_settings
    from pictale.core.errors import PictaleError
    from pictale.service.generation import GenerationService
    from pictale.service.stores import open_stores
    from pictale.service.trainings import TrainingFields, make_training_service

    if resume is None and (photos_dir is None or name is None):
        fail("give PHOTOS_DIR and --name (or --resume ID)")
    files = _photo_files(photos_dir) if resume is None else []
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    stores = open_stores(settings)
    owner = _owner(stores, key)
    svc = GenerationService(settings)
    svc.avatars, svc.characters = stores.avatars, stores.characters
    trainings = make_training_service(svc, stores.db, _factory())
    streams = [(p.name, p.open("rb")) for p in files]
    training_id = resume
    try:
        svc.queue.start()  # the worker, without loading a model to serve: the trainer loads its own
        svc.catalog.refresh()
        if resume is not None:
            trainings.resume(owner, resume)
        else:
            fields = TrainingFields(
                name=name,
                kind=kind,
                trigger=trigger,
                base_model=base_model,
                rank=rank,
                steps=steps,
                learning_rate=learning_rate,
                resolution=resolution,
                seed=seed,
                character=character,
            )
            training_id = trainings.create(owner, fields, streams)["id"]
        for _, stream in streams:
            stream.close()
        console.print(f"training {training_id}")
        final = _follow(trainings, owner, training_id)
    except PictaleError as exc:
        fail(exc.message, 1)  # one line, whatever the terminal's width
    except KeyboardInterrupt:
        console.print(f"stopped; go on with `pictale train --resume {training_id}` (or `pictale serve` resumes it)")
        raise typer.Exit(130) from None
    finally:
        for _, stream in streams:
            stream.close()
        trainings.stop()
        svc.stop()
        stores.close()
    if final["state"] != "done":
        error = (final.get("error") or {}).get("message") or ""
        fail(f"the training {final['state']}: {error}", 1)
    chosen = final.get("chosen") or {}
    console.print(f"chosen: step {chosen.get('step')} ({chosen.get('reason', '')})" if chosen else "chosen: last step")
    console.print(f"avatar {final['avatar']!r} registered: {final['prompt']}")
    if final.get("character"):
        console.print(f"character {final['character']!r}: <be-char:{final['character']}>")
    elif final.get("character_error"):
        console.print(f"[yellow]no character:[/yellow] {final['character_error']}")


def _photo_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        fail(f"{folder} is not a folder of photos")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_FILES)
    if not any(p.suffix.lower() != ".txt" for p in files):
        fail(f"no photos in {folder} (looked for {', '.join(PHOTO_FILES[:-1])})")
    return files


def _follow(trainings: Any, owner: str, training_id: str) -> dict:
    """A bar of steps (stage and loss in its label) until the training ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pictale.cli.output import progress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"))
    with progress(*columns, TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = None
        while True:
            view = trainings.get(owner, training_id)
            loss = f"loss {view['loss']:.4f}" if view.get("loss") is not None else ""
            if task is None:
                task = bar.add_task(view["stage"], total=view["total"], loss=loss)
            bar.update(task, completed=view["step"], total=view["total"], description=view["stage"], loss=loss)
            if view["state"] not in ("queued", "running"):
                return view
            trainings.wait(training_id, 0.2)
            time.sleep(0.05)
