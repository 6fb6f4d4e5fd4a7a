"""`pictale train PHOTOS_DIR --name ... --kind ...`: the training service on the data dir, with a fake trainer."""

from __future__ import annotations

from typer.testing import CliRunner

from pictale.cli import train as train_cmd
from pictale.cli.main import app
from tests.api.fake_trainer import FakeFactory
from tests.api.test_trainings_api import PHOTOS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_train_command_registers_the_avatar_and_character(tmp_path, tiny_models, monkeypatch):
    factory = FakeFactory(tiny_models["lora_peft"])
    monkeypatch.setattr(train_cmd, "_factory", lambda: factory)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, data in enumerate(PHOTOS):
        (photos / f"p{i}.png").write_bytes(data)
    (photos / "notes.md").write_text("not a photo: skipped")
    data = ["--data-dir", tmp_path / "data"]
    r = run(
        "train", photos, "--name", "sasha", "--kind", "object", "--steps", 20, "--base-model", tiny_models["sd15"],
        "--character", "Sasha", *data,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert "avatar 'sasha' registered: <be-lora:sasha:0.8> sasha_object" in said
    assert "character 'Sasha'" in said and "chosen: step 20" in said
    assert factory.contexts[0].spec.steps == 20 and len(factory.contexts[0].photos) == 6
    listed = run("avatars", "list", *data)
    assert "sasha" in listed.output + listed.stderr
    again = run("train", photos, "--name", "sasha", "--kind", "object", "--base-model", tiny_models["sd15"], *data)
    assert again.exit_code == 1 and "already have a lora avatar named 'sasha'" in " ".join(again.stderr.split())


def test_train_command_errors(tmp_path, tiny_models):
    data = ["--data-dir", tmp_path / "data"]
    r = run("train", tmp_path / "none", "--name", "x", *data)
    assert r.exit_code == 2 and "not a folder" in r.stderr
    r = run("train", "--name", "x", *data)
    assert r.exit_code == 2 and "--resume" in r.stderr
