"""`pictale serve --ray [ADDRESS]`: start (or join) Ray, run the application, serve until interrupted."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pictale.cluster.app import APP_NAME, build
from pictale.core.config import Settings

log = logging.getLogger(__name__)

LOCAL = "local"


def keep_local() -> None:
    """Nothing phones home: no usage statistics (Ray sends them unless told not to); the core servers on
    127.0.0.1 for a local Ray (`infra.md`). A variable the user set wins."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def start_ray(settings: Settings) -> str | None:
    """Start a local Ray (returns its temp dir, to remove at the end) or connect to `settings.ray_address`."""
    import ray

    keep_local()
    address = settings.ray_address
    if address and address != LOCAL:
        ray.init(address=address, log_to_driver=False)
        return None
    temp = tempfile.mkdtemp(prefix="ptray", dir="/tmp")  # short: Ray's unix sockets live under it
    ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    return temp


def stop_ray(temp: str | None) -> None:
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        if temp is None:
            serve.delete(APP_NAME)  # a shared cluster keeps its Serve; only pictale's application goes
            from pictale.cluster.signals import actor

            ray.kill(actor(create=False))
        else:
            serve.shutdown()
    ray.shutdown()
    if temp is not None:
        end_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def session_processes(temp: str) -> list[int]:
    """Processes of the local Ray started under `temp` (their command lines name it); none where /proc is absent."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if temp.encode() in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def end_leftovers(temp: str, wait: float = 10.0) -> None:
    """`ray.shutdown` asks the local Ray's processes to stop without waiting for them: wait, then kill the rest,
    so `pictale serve --ray` leaves no Ray process behind."""
    deadline = time.monotonic() + wait
    while session_processes(temp) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in session_processes(temp):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            log.warning("killed Ray process %d, still running after shutdown", pid)


def serve_on_ray(settings: Settings, on_started: Callable[[int, str | None], None]) -> None:
    """Deploy and block until SIGINT/SIGTERM; `on_started(port, local Ray's temp dir)` once it is running."""
    from ray import serve

    temp = start_ray(settings)
    stop = threading.Event()
    try:
        serve.start(http_options={"host": settings.bind_host, "port": settings.port})
        serve.run(build(settings), name=APP_NAME, route_prefix="/", blocking=False)
        on_started(settings.port, temp)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
    finally:
        stop_ray(temp)
