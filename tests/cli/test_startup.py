"""`pictale serve` and friends as a user runs them (subprocesses): start-up errors are one line and a non-zero
exit, the banner comes once the port accepts connections, and default logs are pictale's own lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from tests.e2e.live import free_port

NOISE = (
    "alembic",
    "Loading pipeline components",
    "Loading weights",
    "Writing model shards",
    "Fetching",
    "torchvision",
    "it/s]",
    "Traceback",
    "Uvicorn running",
    '"GET /',
)


def pictale(*args, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "pictale", *map(str, args)]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]


def test_model_not_found_is_one_line(tmp_path):
    r = pictale("serve", "--model", tmp_path / "nope.safetensors", "--port", free_port(), "--data-dir", tmp_path)
    assert r.returncode == 2
    assert lines(r) == [f"error: model '{tmp_path / 'nope.safetensors'}' not found; known models: []"]


def test_bad_settings_are_one_line_naming_the_variable_or_flag(tmp_path):
    r = pictale("serve", "--data-dir", tmp_path, env={"PICTALE_QUEUE_SIZE": "many"})
    assert r.returncode == 2
    assert lines(r) == [
        "error: PICTALE_QUEUE_SIZE: Input should be a valid integer, unable to parse string as an integer (got 'many')"
    ]
    r = pictale("serve", "--port", 70000, "--data-dir", tmp_path)
    assert r.returncode == 2
    assert lines(r) == ["error: --port: port must be between 0 and 65535 (got 70000)"]
    r = pictale("--log-level", "loud", "serve", "--data-dir", tmp_path)
    assert r.returncode == 2 and lines(r) == [
        "error: --log-level must be one of debug, info, warning, error, got 'loud'"
    ]
    for command in (["generate", "a fox"], ["book", "-", "--keywords", "a fox"], ["avatars", "list"], ["keys", "list"]):
        r = pictale(*command, "--data-dir", tmp_path, env={"PICTALE_MAX_WIDTH": "wide", "PICTALE_DATABASE_URL": ""})
        assert r.returncode == 2, (command, r.stderr)
        assert lines(r) == [
            "error: PICTALE_MAX_WIDTH: Input should be a valid integer, unable to parse string as an integer "
            "(got 'wide')"
        ], command


def test_malformed_arguments_are_one_line(tmp_path):
    # the help hint names the command as it was run (here `python -m pictale serve`)
    r = pictale("serve", "--port", "abc", "--data-dir", tmp_path)
    assert r.returncode == 2 and len(lines(r)) == 1, lines(r)
    assert lines(r)[0].startswith(
        "error: Invalid value for '--port': Input should be a valid integer, unable to parse string as an integer (see "
    ) and lines(r)[0].endswith("pictale serve --help)")
    r = pictale("generate", "--data-dir", tmp_path)
    assert r.returncode == 2 and len(lines(r)) == 1, lines(r)
    assert lines(r)[0].startswith("error: Missing argument 'prompt'. (see ")


def test_missing_input_files_are_one_line(tmp_path):
    r = pictale("book", tmp_path / "story.txt", "--data-dir", tmp_path)
    assert r.returncode == 2
    assert lines(r) == [f"error: cannot read the story {tmp_path / 'story.txt'}: No such file or directory"]
    r = pictale("avatars", "add", "face", "lucy", tmp_path / "lucy.jpg", "--data-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr  # (its console wraps a long path at 80 columns)
    assert " ".join(r.stderr.split()) == f"error: no such file: {tmp_path / 'lucy.jpg'}"


def test_port_in_use_is_one_line_and_no_banner(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        r = pictale("serve", "--model", "tiny", "--port", port, "--data-dir", tmp_path)
    assert r.returncode == 2
    assert lines(r) == [
        f"error: port {port} on 127.0.0.1 is in use by another program; choose another with --port or PICTALE_PORT"
    ]
    assert time.monotonic() - started < 30  # refused before any model is written or loaded
    assert not (tmp_path / "models").exists()


def test_banner_after_bind_and_quiet_default_logs(tmp_path):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "pictale",
        "serve",
        "--model",
        "tiny",
        "--data-dir",
        str(tmp_path),
        "--port",
        str(port),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "pictale" in line and "─" in line:  # the banner's top border: the port must answer now
                assert httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/options", timeout=10).status_code == 200
                break
        else:
            raise AssertionError("no banner:\n" + "".join(seen))
        assert httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
        rest = proc.stdout.read()  # after what the loop above buffered
    text = "".join(seen) + rest
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in the default log:\n{text}"
    assert f"web UI: http://127.0.0.1:{port}/" in text
    assert f"A1111 API: http://127.0.0.1:{port}/sdapi/v1" in text
    assert "NO MODEL FOUND" not in text  # --model tiny is asked for, not a fallback


def test_debug_log_level_keeps_library_logs(tmp_path):
    r = pictale(
        "serve", "--model", tmp_path / "nope", "--port", free_port(), "--data-dir", tmp_path, "--log-level", "debug"
    )
    assert r.returncode == 2
    out = r.stdout + r.stderr
    assert "INFO alembic" in out and "Traceback" in out  # the libraries' lines and the traceback, for a bug report
    assert out.rstrip().endswith(f"error: model '{tmp_path / 'nope'}' not found; known models: []")


def test_debug_after_the_default_turns_the_library_switches_back(monkeypatch):
    from pictale.cli import output

    for name in output._QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(output, "_SET_BY_US", set())
    output.configure_logging("info")  # the `pictale` callback, before `serve --log-level debug` is read
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    output.configure_logging("debug")
    assert not any(name in os.environ for name in output._QUIET_ENV)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # a user's own choice is left alone either way
    output.configure_logging("info")
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    output.configure_logging("warning")


def test_the_demo_warning_appears_once(tmp_path):
    """No model anywhere: the demo is served, and its warning is printed once (in the banner), not also logged."""
    port = free_port()
    cmd = [sys.executable, "-m", "pictale", "serve", "--data-dir", str(tmp_path), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("PICTALE_MODEL", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("╰"):  # the banner's bottom border: it has been printed whole
                break
    finally:
        proc.terminate()
        proc.wait(30)
        seen.append(proc.stdout.read())
    text = "".join(seen)
    assert text.count("NO MODEL FOUND") == 1, text
