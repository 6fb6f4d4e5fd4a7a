"""The `pictale` command: serve, generate, models. Heavy imports happen inside commands."""

from __future__ import annotations

import os
from concurrent import futures
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel

from pictale.cli import avatars as avatars_cmd
from pictale.cli import book as book_cmd
from pictale.cli import characters as characters_cmd
from pictale.cli import keys as keys_cmd
from pictale.cli import models as models_cmd
from pictale.cli import train as train_cmd
from pictale.cli.output import LOG_LEVELS, OneLineErrors, configure_logging, console, fail, progress, settings_error

app = typer.Typer(
    help="pictale: a local-first image-generation server for stories.", no_args_is_help=True, cls=OneLineErrors
)
app.add_typer(models_cmd.app, name="models")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(avatars_cmd.app, name="avatars")
app.add_typer(characters_cmd.app, name="characters")
app.command("book")(book_cmd.book)
app.command("train")(train_cmd.train)

DataDir = Annotated[Path | None, typer.Option(help="Data dir (models, outputs, database).", envvar=None)]
DatabaseUrlOpt = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL (default sqlite in the data dir); postgresql://... works.")
]
ModelOpt = Annotated[str | None, typer.Option(help='Checkpoint: path, hub id, name in the models dir, or "tiny".')]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(help="debug, info (default), warning, error; debug also shows libraries' logs and progress bars."),
]


@app.callback()
def _configure(
    log_level: Annotated[
        str, typer.Option(envvar="PICTALE_LOG_LEVEL", help="debug, info, warning, error (default info).")
    ] = "info",
) -> None:
    """pictale: a local-first image-generation server for stories."""
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    configure_logging(log_level)


def make_settings(**flags: Any):
    """CLI flags over PICTALE_* environment variables over defaults; a bad value is one line and exit 2."""
    from pydantic import ValidationError

    from pictale.core.config import Settings

    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        fail(settings_error(exc, flags))


@app.command()
def serve(
    ctx: typer.Context,
    model: ModelOpt = None,
    data_dir: DataDir = None,
    models_dir: Annotated[Path | None, typer.Option(help="Models dir (default DATA_DIR/models).")] = None,
    listen: Annotated[bool | None, typer.Option("--listen", help="Bind 0.0.0.0 instead of 127.0.0.1.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind this address (overrides --listen).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 7860).")] = None,
    api_auth: Annotated[str | None, typer.Option(help="user:pass[,user2:pass2]: HTTP Basic on every route.")] = None,
    cors_allow_origins: Annotated[str | None, typer.Option(help="Comma-separated CORS origins.")] = None,
    cors_allow_origins_regex: Annotated[str | None, typer.Option(help="CORS origin regex.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, mps.")] = None,
    max_width: Annotated[int | None, typer.Option(help="Largest width accepted (422 above).")] = None,
    max_height: Annotated[int | None, typer.Option(help="Largest height accepted (422 above).")] = None,
    queue_size: Annotated[int | None, typer.Option(help="Jobs that may wait; more get 429.")] = None,
    max_prompt_chars: Annotated[
        int | None, typer.Option(help="Longest prompt or negative prompt in characters (422 above).")
    ] = None,
    max_image_pixels: Annotated[
        int | None, typer.Option(help="Largest image (width x height) any route decodes (4xx above).")
    ] = None,
    database_url: DatabaseUrlOpt = None,
    max_lora_mb: Annotated[int | None, typer.Option(help="Largest LoRA/embedding upload in MB.")] = None,
    compat: Annotated[str | None, typer.Option(help="blockentropy: OpenAI routes take its quirks (n = seed).")] = None,
    llm_base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible chat endpoint for story prompts, e.g. http://127.0.0.1:11434/v1"),
    ] = None,
    llm_model: Annotated[str | None, typer.Option(help="The LLM's model (default: the endpoint's first).")] = None,
    llm_api_key: Annotated[str | None, typer.Option(help="The LLM's API key, if it needs one.")] = None,
    clip_model: Annotated[str | None, typer.Option(help='CLIP scorer of book pages: path, hub id or "tiny".')] = None,
    t5_max_tokens: Annotated[int | None, typer.Option(help="T5 prompt limit of SD3 models (256; up to 512).")] = None,
    flux_t5_file: Annotated[str | None, typer.Option(help="Flux T5-XXL file name(s), comma-separated.")] = None,
    flux_clip_file: Annotated[str | None, typer.Option(help="Flux CLIP-L file name(s), comma-separated.")] = None,
    flux_vae_file: Annotated[str | None, typer.Option(help="Flux VAE file name(s) (ae.safetensors).")] = None,
    flux_memory: Annotated[
        str | None, typer.Option(help="Flux memory mode: auto, full, offload, fp8, sequential.")
    ] = None,
    gallery: Annotated[
        bool | None, typer.Option("--gallery/--no-gallery", help="Keep each key's generated images (/v1/gallery).")
    ] = None,
    gallery_days: Annotated[
        float | None, typer.Option(help="Delete gallery images older than this many days (30; 0: keep).")
    ] = None,
    gallery_max_images: Annotated[
        int | None, typer.Option(help="Most gallery images kept per key, oldest go first (10000; 0: no limit).")
    ] = None,
    continuous_batching: Annotated[
        bool | None,
        typer.Option(
            "--continuous-batching/--no-continuous-batching",
            help="Requests join a running batch between denoising steps (on; Euler, Euler a, DPM++ 2M on SD 1.5/SDXL).",
        ),
    ] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option(
            "--deterministic/--no-deterministic",
            help="On CUDA, never merge requests: each image equals its request run alone (merged: within 1/255).",
        ),
    ] = None,
    compile: Annotated[
        bool | None, typer.Option("--compile", help="torch.compile the UNet and VAE decoder at load (GPU speed).")
    ] = None,
    compile_sizes: Annotated[
        str | None, typer.Option(help="Sizes compiled at start-up, e.g. 512x512,768x768 (the model's default).")
    ] = None,
    compile_lora_rank: Annotated[int | None, typer.Option(help="Compiled mode: largest LoRA rank (64).")] = None,
    compile_lora_slots: Annotated[int | None, typer.Option(help="Compiled mode: LoRAs per image (2).")] = None,
    low_vram: Annotated[
        bool | None, typer.Option("--low-vram", help="6-8 GB cards: model CPU offload, VAE tiling and slicing.")
    ] = None,
    png_compress_level: Annotated[int | None, typer.Option(help="PNG zlib level 0-9 (1: fast).")] = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Run on Ray Serve: a local Ray on this machine, or the cluster at ADDRESS.")
    ] = False,
    address: Annotated[
        str | None, typer.Argument(metavar="[ADDRESS]", help="With --ray: the Ray cluster to join (auto, HOST:PORT).")
    ] = None,
    ray_replicas: Annotated[int | None, typer.Option(help="Ray: worker replicas (1; one GPU each).")] = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Start the HTTP server (A1111 /sdapi/v1 API, pictale's /v1 API)."""
    from pictale.api.app import create_app
    from pictale.cli import serving
    from pictale.service.speed import speed_notes

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if address and not ray:
        fail(f"unexpected argument {address!r}: only `serve --ray ADDRESS` takes one (the Ray cluster to join)")
    settings = make_settings(
        model=model,
        data_dir=data_dir,
        models_dir=models_dir,
        listen=listen,
        host=host,
        port=port,
        api_auth=api_auth,
        cors_allow_origins=cors_allow_origins,
        cors_allow_origins_regex=cors_allow_origins_regex,
        device=device,
        max_width=max_width,
        max_height=max_height,
        queue_size=queue_size,
        max_prompt_chars=max_prompt_chars,
        max_image_pixels=max_image_pixels,
        database_url=database_url,
        max_lora_mb=max_lora_mb,
        compat=compat,
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        llm_api_key=llm_api_key,
        clip_model=clip_model,
        t5_max_tokens=t5_max_tokens,
        flux_t5_file=flux_t5_file,
        flux_clip_file=flux_clip_file,
        flux_vae_file=flux_vae_file,
        flux_memory=flux_memory,
        gallery=gallery,
        gallery_days=gallery_days,
        gallery_max_images=gallery_max_images,
        continuous_batching=continuous_batching,
        deterministic=deterministic,
        compile=compile,
        compile_sizes=compile_sizes,
        compile_lora_rank=compile_lora_rank,
        compile_lora_slots=compile_lora_slots,
        low_vram=low_vram,
        png_compress_level=png_compress_level,
        ray_address=(address or "local") if ray else None,
        ray_replicas=ray_replicas,
        # `pictale --log-level X serve` (or PICTALE_LOG_LEVEL) when serve's own flag is not given
        log_level=log_level or ctx.find_root().params.get("log_level"),
    )
    configure_logging(settings.log_level)

    def banner(web_app: Any, port: int) -> None:
        svc = web_app.state.service
        entry = svc.current_model
        lines = [f"model: [bold]{entry.title if entry else '?'}[/bold] ({entry.source if entry else ''})"]
        lines.append(f"data dir: {settings.data_dir}")
        lines.append(f"web UI: http://{settings.bind_host}:{port}/")
        lines.append(f"A1111 API: http://{settings.bind_host}:{port}/sdapi/v1  (API docs: /docs)")
        lines.append(f"auth: {web_app.state.auth.describe()}")
        llm = settings.llm_base_url or "none (keyword prompts; set --llm-base-url)"
        lines.append(f"story LLM: {llm}")
        lines.extend(f"speed: {note}" for note in speed_notes(svc))
        style = "green"
        for note in svc.startup_notes:
            lines.append(f"\n[bold red]{note}[/bold red]")
            style = "red"
        console.print(Panel("\n".join(lines), title="pictale", border_style=style))

    if settings.ray_address:
        from pictale.cli.ray_serving import serve_on_ray

        serve_on_ray(settings, console)
        return
    serving.run(
        lambda: create_app(settings, log_notes=False),
        settings.bind_host,
        settings.port,
        log_level=settings.log_level,
        on_started=banner,
    )


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt (A1111 syntax).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the PNGs.")] = Path("outputs"),
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    steps: Annotated[int | None, typer.Option(help="Sampling steps (20; few-step and FLUX.1 models: theirs).")] = None,
    seed: Annotated[int, typer.Option(help="Seed; -1 random; image i uses seed+i.")] = -1,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "512x512",
    sampler: Annotated[str | None, typer.Option(help='A1111 sampler name, e.g. "DPM++ 2M Karras" (Euler).')] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale (7; few-step and FLUX.1 models: theirs).")] = None,
    distilled_cfg: Annotated[
        float | None, typer.Option(help="FLUX.1 dev/Kontext: distilled guidance (Forge's; default: the model's).")
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 1,
    model: ModelOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrlOpt = None,
    key: Annotated[str | None, typer.Option(help="Use this API key's avatars (default: the local user's).")] = None,
) -> None:
    """Generate images locally (no server) with a progress bar per step; avatar tokens work in the prompt."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from pictale.core.errors import PictaleError
    from pictale.core.images import parse_size
    from pictale.core.samplers import resolve_sampler
    from pictale.core.types import GenerationSpec
    from pictale.service.generation import GenerationService
    from pictale.storage.userfiles import write_atomically

    parsed = parse_size(size)
    if parsed is None:
        fail(f"--size must look like 512x768, got {size!r}")
    width, height = parsed
    from pictale.service.stores import open_stores

    settings = make_settings(model=model, data_dir=data_dir, database_url=database_url)
    stores = open_stores(settings)
    owner = "local"
    if key:
        principal = stores.keys.verify(key)
        if principal is None:
            stores.close()
            fail("--key is not a valid API key")
        owner = principal.id
    svc = GenerationService(settings)
    svc.avatars = stores.avatars
    svc.characters = stores.characters
    try:
        entry = svc.start()
        for note in svc.startup_notes:
            console.print(f"[bold red]{note}[/bold red]")
        console.print(f"model: {entry.title}")
        name, schedule = resolve_sampler(sampler or "Euler", None)
        spec = GenerationSpec(
            prompt=prompt,
            negative_prompt=negative,
            steps=20 if steps is None else steps,
            seed=seed,
            width=width,
            height=height,
            sampler=name,
            scheduler=schedule,
            cfg_scale=7.0 if cfg is None else cfg,
            distilled_cfg_scale=distilled_cfg,
            batch_size=1,
            n_iter=n,
        )
        spec = _with_profile(svc, spec, steps=steps, sampler=sampler, cfg=cfg)
        steps = spec.steps
        job = svc.submit(spec, owner=owner)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with progress(*columns) as bar:
            task = bar.add_task("image 1", total=steps)
            while not job.future.done():
                p = job.progress
                bar.update(task, description=f"image {p.batch_no + 1}/{n}", completed=p.step, total=p.total or steps)
                futures.wait([job.future], timeout=0.1)
            result = job.future.result()
            bar.update(task, description=f"image {n}/{n}", completed=steps, total=steps)  # the end, always shown
    except PictaleError as exc:
        fail(exc.message)
    finally:
        svc.stop()
        stores.close()
    output.mkdir(parents=True, exist_ok=True)
    start = len(list(output.glob("*.png")))
    for i, (data, s) in enumerate(zip(result.images, result.seeds, strict=True)):
        path = output / f"{start + i:05d}-{s}.png"
        write_atomically(path, data)
        typer.echo(str(path))


def _with_profile(svc: Any, spec: Any, **given: Any) -> Any:
    """Few-step and FLUX.1 models get their own sampler, steps and CFG where no option was given (as on the A1111
    route); the fixed defaults stay for the others."""
    from dataclasses import replace

    from pictale.service.profiles import apply_profile, profile_of_request

    profile, _ = profile_of_request(svc)
    if not profile.own_defaults:
        return spec
    sent = {"steps": given["steps"], "cfg_scale": given["cfg"], "sampler": given["sampler"]}
    sent |= {"scheduler": given["sampler"], "distilled_cfg_scale": spec.distilled_cfg_scale}
    explicit = {"width", "height"} | {name for name, value in sent.items() if value is not None}
    fields = {k: getattr(spec, k) for k in ("sampler", "scheduler", "steps", "cfg_scale", "width", "height")}
    return replace(spec, **apply_profile(fields, profile, explicit))


def main() -> None:  # pragma: no cover - console script entry
    app()
