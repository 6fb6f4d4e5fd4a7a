"""The benchmarks' live `pictale serve` subprocess on 127.0.0.1 (output discarded)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

# What the benchmarks ask for: the same prompts and story everywhere, so their figures compare.
PROMPTS = [
    "a photo of a cat",
    "a dog running in a park",
    "a red chair in a room",
    "a tree on a hill",
    "an old man with a hat",
    "a castle at sunset",
    "a blue car on a road",
    "a bowl of fruit",
]
PAGES = [
    "Sasha wakes up early and looks out of the window at the snowy garden.",
    "She puts on her red coat and her green boots and runs outside.",
    "In the garden Sasha finds small tracks in the fresh snow.",
    "The tracks lead to the old oak tree at the end of the garden.",
    "Behind the tree a little fox is hiding, shivering in the cold.",
    "Sasha shares her warm bread with the fox, who eats it slowly.",
    "The fox follows Sasha back to the house and sits by the door.",
    "That night the fox sleeps in a basket next to the warm fire.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, data: Path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    """Start the server and return (process, base URL) once `/sdapi/v1/options` answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "pictale", "serve", "--model", str(model), "--data-dir", str(data)]
    cmd += [*args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(base + "/sdapi/v1/options", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")
