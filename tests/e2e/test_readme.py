"""Every README example runs as written, in README order, against a live `pictale serve` on the tiny demo model.

The bash blocks' commands run in bash (`curl` made to fail on an HTTP error, `pictale` as this checkout's CLI on
the server's data dir), the python blocks in this venv's python. The only changes to the text: the host and
port (the live server's, and a local listener for callback URLs), sizes (64x64; image requests that name no
size get one), and `ID` in a URL, which becomes the id of the job or book made just before. Asynchronous work
(202) is followed to its end before the next command, as a reader would. Skipped, and listed in `SKIPS` with
why: commands that cannot run in a test, and synopsis lines (`[--flag]`, `a|b`, UPPERCASE placeholders).
An example that does not fit this fails the test, so the README has to stay true.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.avatars import files
from tests.e2e.live import live_server
from tests.webhook_receiver import Receiver

README = Path(__file__).resolve().parents[2] / "README.md"
SIZE = 64
SKIPS = {
    "./run": "sets up the venv and starts the server or runs this whole suite: the test is what it checks",
    ".venv/bin/pictale models pull": "downloads a model from the hub: no network in tests",
    "pictale models pull": "downloads a model from the hub: no network in tests",
    ".venv/bin/python bench/": "benchmarks: minutes of timed runs, by hand",
    "PICTALE_CALLBACK_ALLOW_PRIVATE=true pictale serve": "starts a server: the test's own live server runs so",
    "pictale serve": "starts a server: the test's own live server is that",
}
IMAGE_ROUTES = re.compile(r"/sdapi/v1/(txt2img|img2img)|/v1/jobs\b|/v1/images/generations|/v1/story/imagine")
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
STORY = "Sasha finds a kite.\n\nThe wind takes it over the hill.\n"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def commands(code: str) -> list[str]:
    """Logical shell commands: continuation lines and quotes spanning lines joined, comment lines dropped."""
    out, pending = [], ""
    for line in code.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if line.rstrip().endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        out.append(pending.strip())
        pending = ""
    assert not pending, f"unterminated command in the README: {pending}"
    return out


def skip_reason(command: str) -> str | None:
    for prefix, why in SKIPS.items():
        if command.startswith(prefix):
            return why
    tokens = shlex.split(command, comments=True)
    for prev, token in zip(["", *tokens], tokens, strict=False):
        if token == "|" or token == "..." or token.startswith("[") or re.fullmatch(r"[a-z-]+(\|[a-z-]+)+", token):
            return "a synopsis, not a command"
        if re.fullmatch(r"[A-Z][A-Z_]*", token) and prev != "-X" and token not in HTTP_METHODS:
            return f"a synopsis with the placeholder {token}"
    return None


class Run:
    """Adapts and runs the README's commands in order, remembering the ids it makes."""

    def __init__(self, base: str, hook_port: int, work: Path, env: dict[str, str]) -> None:
        self.base, self.hook_port, self.work, self.env = base, hook_port, work, env
        self.ids: dict[str, str] = {}
        self.ran: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def adapt(self, text: str) -> str:
        port = self.base.rsplit(":", 1)[1]
        text = re.sub(r"127\.0\.0\.1:7860\b", f"127.0.0.1:{port}", text)
        text = re.sub(rf"127\.0\.0\.1:(?!{port}\b)\d+", f"127.0.0.1:{self.hook_port}", text)
        text = re.sub(r"\b\d{3,4}x\d{3,4}\b", f"{SIZE}x{SIZE}", text)
        text = re.sub(r'"(width|height)":\s*\d+', rf'"\1": {SIZE}', text)
        return text

    def adapt_command(self, command: str) -> str:
        command = self.adapt(command)
        for kind in ("jobs", "books"):
            if f"/v1/{kind}/ID" in command:
                assert kind in self.ids, f"no {kind} made before: {command}"
                command = command.replace(f"/v1/{kind}/ID", f"/v1/{kind}/{self.ids[kind]}")
        words = shlex.split(command, comments=True)
        sized = re.search(r'"(width|height|size)"', command)
        if words[0] == "curl" and IMAGE_ROUTES.search(command) and "-d" in words and not sized:
            command = re.sub(r"-d '\{", f'-d \'{{"width": {SIZE}, "height": {SIZE}, ', command, count=1)
        if words[0] == "pictale" and words[1] in ("generate", "book") and "--size" not in words:
            command = command.split(" #")[0] + f" --size {SIZE}x{SIZE}"
        return command

    def make_inputs(self, command: str, tiny_sd15: Path) -> None:
        """Files a command uploads or reads: photo-like images, a LoRA for the tiny model, a story."""
        words = shlex.split(command, comments=True)
        for prev, word in zip(["", *words], words, strict=False):
            if prev in ("-o", "--output"):
                continue
            name = word.split("=@", 1)[1] if "=@" in word else word
            path = self.work / name
            if path.exists() or "/" in name:
                continue
            suffix = path.suffix.lower()
            if suffix in (".jpg", ".jpeg", ".png"):
                path.write_bytes(files.png((96, 128), seed=len(name), fmt="JPEG" if suffix != ".png" else "PNG"))
            elif suffix == ".safetensors":
                path.write_bytes(files.lora_kohya(tiny_sd15))
            elif suffix == ".txt":
                path.write_text(STORY)

    def shell(self, original: str, tiny_sd15: Path) -> None:
        why = skip_reason(original)
        if why:
            self.skipped.append((original.splitlines()[0], why))
            return
        command = self.adapt_command(original)
        self.make_inputs(command, tiny_sd15)
        r = subprocess.run(
            ["bash", "-c", command], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, (
            f"README command failed ({r.returncode}):\n{original}\nran: {command}\n"
            f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        )
        self.ran.append(original)
        self.follow(command, r.stdout)

    def follow(self, command: str, stdout: str) -> None:
        """Remember the id of a job or book just made, and wait for it to finish (it must succeed)."""
        made = re.search(r"-X POST \S*/v1/(jobs|books)(\s|$)", command)
        if not made:
            return
        kind = made[1]
        body = json.loads(stdout)
        self.ids[kind] = body["id"]
        deadline = time.time() + 300
        while time.time() < deadline:
            view = httpx.get(f"{self.base}/v1/{kind}/{body['id']}", timeout=30).json()
            if view["state"] not in ("queued", "running"):
                assert view["state"] == "done", view
                return
            time.sleep(0.2)
        raise AssertionError(f"the {kind[:-1]} {body['id']} did not finish")

    def python(self, code: str, index: int) -> None:
        script = self.work / f"readme_example_{index}.py"
        script.write_text(self.adapt(code))
        r = subprocess.run(
            [sys.executable, str(script)], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, f"README python example failed:\n{code}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        self.ran.append(code)


@pytest.fixture
def hook_listener():
    receiver = Receiver((204,))
    yield receiver
    receiver.close()


def _tools(bin_dir: Path) -> None:
    """`curl` that fails on an HTTP error, with a time limit; `pictale` and `python` of this checkout."""
    real_curl = shutil.which("curl")
    assert real_curl, "curl is needed to run the README's examples"
    tools = {
        "curl": f'exec {real_curl} --silent --show-error --fail-with-body --max-time 300 "$@"',
        "pictale": f'exec {sys.executable} -m pictale "$@"',
        "python": f'exec {sys.executable} "$@"',
    }
    bin_dir.mkdir(parents=True)
    for name, line in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)


def test_every_readme_example_runs(tmp_path, tiny_models, tiny_clip, hook_listener):
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    _tools(tmp_path / "bin")
    found = blocks(README.read_text(encoding="utf-8"))
    runnable = [(lang, code) for lang, code in found if lang in ("bash", "sh", "python")]
    assert len(runnable) >= 8, "the README's examples were not found"
    env = {"PICTALE_CLIP_MODEL": str(tiny_clip), "PICTALE_CALLBACK_ALLOW_PRIVATE": "true"}  # the README's webhook
    with live_server(data, "tiny", env=env) as server:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "PICTALE_DATA_DIR": str(data),  # the CLI lines work "straight on the data dir" of the server
            "PICTALE_CLIP_MODEL": str(tiny_clip),
        }
        run = Run(server["base"], hook_listener.port, work, env)
        for index, (lang, code) in enumerate(runnable):
            if lang == "python":
                run.python(code, index)
                continue
            for command in commands(code):
                run.shell(command, tiny_models["sd15"])
    ran_curl = [c for c in run.ran if c.startswith("curl")]
    assert len(ran_curl) >= 15 and any(c.startswith("pictale") for c in run.ran), run.ran
    assert all(why for _, why in run.skipped)
    # what a skipped line runs (after any VAR=value prefix): only these are ever skipped
    skipped_kinds = {next(w for w in line.split() if "=" not in w) for line, _ in run.skipped}
    assert skipped_kinds <= {"./run", ".venv/bin/pictale", ".venv/bin/python", "pictale"}, run.skipped
    assert [h["path"] for h in hook_listener.calls] == ["/done"]  # the job's callback_url was called once
    assert (work / "book.pdf").read_bytes().startswith(b"%PDF") and (work / "book.html").stat().st_size > 1000
    print(f"ran {len(run.ran)} README examples; skipped:", *(f"  {line}: {why}" for line, why in run.skipped), sep="\n")
