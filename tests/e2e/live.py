"""Start a real `pictale serve` subprocess on 127.0.0.1 for the end-to-end tests, and stop it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(data: Path, model: str, *, env: dict[str, str] | None = None, ready: str = "/sdapi/v1/options"):
    """Yield {"port", "base", "log"} once `ready` answers 200; the server log is in the assertion on failure."""
    port = free_port()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "pictale", "serve", "--model", model, "--data-dir", str(data), "--port", str(port)]
    log_path = data / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, base + ready, log_path)
            yield {"port": port, "base": base, "log": log_path, "proc": proc}
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(log_path.read_text())
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not start: " + log_path.read_text())


def iter_server(*args, **kwargs) -> Iterator[dict]:
    """For module fixtures: `yield from iter_server(...)`."""
    with live_server(*args, **kwargs) as server:
        yield server
