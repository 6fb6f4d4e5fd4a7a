"""`pictale book story.txt --character sasha -n 4 -o book.pdf`: a picture book made locally, a bar per page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pictale.cli.output import console, fail


def book(
    story: Annotated[
        Path | None, typer.Argument(help="Story text file ('-' for stdin); pages split at blank lines.")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="book.pdf or book.html.")] = Path("book.pdf"),
    character: Annotated[list[str] | None, typer.Option("--character", "-c", help="A character (repeatable).")] = None,
    candidates: Annotated[int, typer.Option("-n", "--candidates", help="Candidates per page; the best wins.")] = 2,
    keywords: Annotated[str | None, typer.Option(help="Instead of a story file: the LLM writes the story.")] = None,
    reading_level: Annotated[str, typer.Option(help="For a story written from keywords.")] = "age 4-6",
    pages: Annotated[int | None, typer.Option(help="Number of pages (default: one per paragraph).")] = None,
    style: Annotated[str, typer.Option(help="Prefix of every page's prompt.")] = "",
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    steps: Annotated[int | None, typer.Option(help="Sampling steps (default: the model's).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; -1 random. Page p candidate k: seed + (p-1)*1000 + k.")] = -1,
    threshold: Annotated[float | None, typer.Option(help="Generate more until the best score reaches it.")] = None,
    max_candidates: Annotated[int | None, typer.Option(help="Most candidates per page with --threshold.")] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Print each page's scores in the book.")] = False,
    references: Annotated[
        bool,
        typer.Option(
            "--character-references/--no-character-references",
            help="FLUX.1 Kontext: pages with a character are edits of its reference image.",
        ),
    ] = True,
    title: Annotated[str | None, typer.Option(help="Book title.")] = None,
    model: Annotated[str | None, typer.Option(help='Checkpoint: path, hub id, name, or "tiny".')] = None,
    clip_model: Annotated[str | None, typer.Option(help='CLIP scorer: path, hub id, or "tiny".')] = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible chat endpoint (.../v1).")] = None,
    llm_model: Annotated[str | None, typer.Option(help="The LLM's model name.")] = None,
    llm_api_key: Annotated[str | None, typer.Option(help="The LLM's API key, if it needs one.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir (models, database, book images).")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default sqlite in the data dir).")] = None,
    key: Annotated[str | None, typer.Option(help="Use this API key's characters and avatars.")] = None,
) -> None:
    """Make a picture book locally (no server): plan pages, N scored candidates each, export PDF or HTML."""
    from pydantic import ValidationError

    from pictale.api.native.story_schemas import BookRequest
    from pictale.cli.main import make_settings
    from pictale.core.errors import PictaleError
    from pictale.service.generation import GenerationService
    from pictale.service.profiles import profile_of_request
    from pictale.service.stores import open_stores
    from pictale.storage.userfiles import write_atomically
    from pictale.story.setup import make_book_runner

    if output.suffix.lower() not in (".pdf", ".html", ".htm"):
        fail(f"-o must end in .pdf or .html, got {output.name!r}")
    text = _read_story(story) if story is not None else None
    try:
        request = BookRequest(
            title=title,
            story=text,
            keywords=keywords,
            reading_level=reading_level,
            pages=pages,
            characters=character or [],
            style=style,
            negative_prompt=negative,
            candidates=candidates,
            threshold=threshold,
            max_candidates=max_candidates,
            character_references=references,
            steps=steps,
            size=size,
            seed=seed,
            model=model,
        )
    except (ValidationError, PictaleError) as exc:
        console.print(f"[red]error:[/red] {_first_error(exc)}")
        raise typer.Exit(2) from None
    settings = make_settings(
        model=model,
        data_dir=data_dir,
        database_url=database_url,
        clip_model=clip_model,
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        llm_api_key=llm_api_key,
    )
    stores = open_stores(settings)
    owner = _owner(stores, key)
    svc = GenerationService(settings)
    svc.avatars, svc.characters = stores.avatars, stores.characters
    runner = make_book_runner(svc, stores.db)
    try:
        entry = svc.start()
        console.print(f"model: {entry.title}")
        profile, _ = profile_of_request(svc, model)
        req = request.to_request(profile, entry.family, limits=settings)
        made = runner.create(owner, req)
        book_id = made["id"]
        _follow(runner, owner, book_id, req)
        final = runner.get(owner, book_id)
        if final["state"] != "done":
            console.print(f"[red]error:[/red] the book {final['state']}: {final['error'] or ''}")
            raise typer.Exit(1)
        data = runner.export(owner, book_id, "pdf" if output.suffix.lower() == ".pdf" else "html", scores=scores)
        write_atomically(output, data)
    except PictaleError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        runner.stop()
        svc.stop()
        stores.close()
    console.print(f"book {book_id}: {final['page_count']} pages, scoring: {final['scoring']} -> {output}")


def _follow(runner: Any, owner: str, book_id: str, req: dict) -> None:
    """A bar per page (candidates scored of N) until the book's run ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from pictale.cli.output import progress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks: dict[int, Any] = {}
    with progress(*columns) as bar:
        while True:
            view = runner.get(owner, book_id)
            for page in view.get("pages", []):
                n = page["number"]
                if n not in tasks:
                    tasks[n] = bar.add_task(f"page {n}", total=req["candidates"])
                done = len(page["candidates"])
                total = max(req["candidates"], done)
                label = f"page {n}" + (f" best {page['scores']['total']:.3f}" if page.get("scores") else "")
                bar.update(
                    tasks[n], completed=done if page["chosen"] is None else total, total=total, description=label
                )
            if view["state"] not in ("queued", "running"):
                return
            runner.wait(book_id, 0.2)
            time.sleep(0.05)


def _read_story(path: Path) -> str:
    import sys

    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read the story {path}: {exc.strerror}")


def _owner(stores: Any, key: str | None) -> str:
    if not key:
        return "local"
    principal = stores.keys.verify(key)
    if principal is None:
        console.print("[red]error:[/red] --key is not a valid API key")
        raise typer.Exit(2)
    return principal.id


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"{loc}: {first['msg']}" if loc else str(first["msg"])
    return getattr(exc, "message", str(exc))
