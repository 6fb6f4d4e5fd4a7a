"""`pictale serve --ray [ADDRESS]`: the flag alone is a local Ray, an address joins that cluster; an address
without `--ray` is refused. The Ray launch itself is replaced here (tests/cluster starts a real one)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pictale.cli import main, ray_serving, serving


@pytest.fixture
def launched(monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(ray_serving, "serve_on_ray", lambda settings, console: seen.setdefault("ray", settings))
    monkeypatch.setattr(serving, "run", lambda *a, **k: seen.setdefault("plain", True))
    return seen


@pytest.mark.parametrize(
    ("args", "address"),
    [
        (["--ray", "--model", "tiny"], "local"),
        (["--model", "tiny", "--ray"], "local"),
        (["--ray", "auto", "--model", "tiny"], "auto"),
        (["--ray", "10.0.0.5:6379"], "10.0.0.5:6379"),
    ],
)
def test_ray_flag_and_address(launched, tmp_path, args, address):
    r = CliRunner().invoke(main.app, ["serve", "--data-dir", str(tmp_path), *args])
    assert r.exit_code == 0, r.output
    assert launched["ray"].ray_address == address and "plain" not in launched


def test_an_address_without_ray_is_refused(launched, tmp_path):
    r = CliRunner().invoke(main.app, ["serve", "--data-dir", str(tmp_path), "auto"])
    assert r.exit_code == 2
    assert "only `serve --ray ADDRESS` takes one" in r.output
    assert launched == {}


def test_ray_replicas_flag(launched, tmp_path):
    r = CliRunner().invoke(main.app, ["serve", "--data-dir", str(tmp_path), "--ray", "--ray-replicas", "3"])
    assert r.exit_code == 0, r.output
    assert launched["ray"].ray_replicas == 3
