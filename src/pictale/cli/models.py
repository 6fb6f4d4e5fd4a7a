"""`pictale models ...`: list, make-tiny, pull."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="List, build and download checkpoints.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_models(data_dir: Annotated[Path | None, typer.Option(help="Data dir.")] = None) -> None:
    """Checkpoints found in the models dir (as /sdapi/v1/sd-models lists them)."""
    from pictale.cli.main import make_settings
    from pictale.engine.models import scan_checkpoints
    from pictale.service.flux import entry_variant, license_of

    settings = make_settings(data_dir=data_dir)
    settings.checkpoints_path.mkdir(parents=True, exist_ok=True)
    entries = scan_checkpoints(settings.checkpoints_path)
    table = Table(title=f"checkpoints in {settings.checkpoints_path}")
    table.add_column("title", no_wrap=True)  # the name and its [hash] stay on one line; the others wrap
    for col in ("family", "variant", "licence", "source"):
        table.add_column(col)
    table.add_column("filename", overflow="fold")
    for e in entries:
        variant = entry_variant(e)  # FLUX.1: schnell, dev or kontext, and the weights' licence
        cells = (e.title, e.family or "?", variant or "", license_of(variant) or "", e.source, e.filename)
        table.add_row(*(escape(cell) for cell in cells))  # "[dev]" and "[hash]" are text, not rich markup
    console.print(table)
    if not entries:
        console.print("no checkpoints: `pictale models pull HUB_ID`, or drop a .safetensors file there")


@app.command("make-tiny")
def make_tiny(directory: Annotated[Path, typer.Argument(help="Where to write the tiny models.")]) -> None:
    """Write tiny seeded models (SD 1.5, SDXL, SD3, FLUX.1 schnell/dev/Kontext; folders and single files;
    adapters; CLIP) for tests and demos, and tiny FLUX.1 schnell files in the ComfyUI layout (unet/,
    text_encoder/, VAE/, Stable-diffusion/)."""
    from pictale.engine.tiny import write_tiny_models
    from pictale.engine.tiny.flux_files import write_tiny_flux_files

    paths = write_tiny_models(directory)
    paths.update({f"flux_{k}": v for k, v in write_tiny_flux_files(directory, "schnell").items()})
    for name, path in paths.items():
        console.print(f"{name}: {path}")


@app.command("pull")
def pull(
    hub_id: Annotated[str, typer.Argument(help="e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")],
    data_dir: Annotated[Path | None, typer.Option(help="Data dir.")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
) -> None:
    """Download a diffusers model (safetensors only) into the models dir, with a progress bar."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from pictale.cli.main import make_settings

    settings = make_settings(data_dir=data_dir)
    target = settings.checkpoints_path / hub_id.replace("/", "--")
    try:
        snapshot_download(
            hub_id,
            revision=revision,
            local_dir=target,
            # Pickle weights are never fetched: pictale loads safetensors only.
            allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model", "*.yaml"],
            ignore_patterns=[
                "*.bin",
                "*.ckpt",
                "*.pt",
                "*.pth",
                "*.msgpack",
                "*.onnx",
                "*fp16*",
                "*.non_ema*",
                # FLUX.1 repos hold the BFL single files beside the diffusers folders: the same weights twice
                "flux1-*.safetensors",
                "ae.safetensors",
            ],
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        console.print(f"[red]could not download {hub_id}:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"saved to {target}; it is listed by `pictale models list` and /sdapi/v1/sd-models")
