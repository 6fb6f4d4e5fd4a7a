"""`pictale serve --ray`: the port is checked first (one line when taken), then Ray and the application start."""

from __future__ import annotations

from typing import Any

from rich.panel import Panel

from pictale.cli import serving
from pictale.core.config import Settings


def serve_on_ray(settings: Settings, console: Any) -> None:
    from pictale.cluster.app import replica_bounds
    from pictale.cluster.launch import LOCAL, serve_on_ray

    serving.bind(settings.bind_host, settings.port).close()  # Serve's proxy binds it; a taken port fails here
    lo, hi = replica_bounds(settings)
    replicas = f"{lo}" if lo == hi else f"{lo} to {hi} (autoscaling)"
    where = (
        "a local Ray on this machine" if settings.ray_address == LOCAL else f"the Ray cluster at {settings.ray_address}"
    )
    console.print(f"starting pictale on {where}: {replicas} worker replica(s) ...")

    def banner(port: int, temp: str | None) -> None:
        base = f"http://{settings.bind_host}:{port}"
        lines = [
            f"Ray Serve: {where}; {replicas} worker replica(s), one ingress",
            f"model: [bold]{settings.model or 'the first checkpoint found, else the tiny demo'}[/bold]",
            f"data dir: {settings.data_dir}",
            f"web UI: {base}/",
            f"A1111 API: {base}/sdapi/v1  (API docs: /docs; replicas: /v1/metrics)",
        ]
        if temp is not None:
            lines.append(f"Ray logs: {temp}/session_latest/logs")
        console.print(Panel("\n".join(lines), title="pictale", border_style="green"))

    serve_on_ray(settings, banner)
