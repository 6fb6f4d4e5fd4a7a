"""`pictale keys` and `pictale avatars` on a data dir, without a server."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pictale.accounts.keys import KeyStore
from pictale.cli.main import app
from pictale.storage.db import Database
from tests.avatars import files

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_keys_create_prints_the_key_once_and_it_verifies(tmp_path):
    r = run("keys", "create", "alice", "--admin", "--data-dir", tmp_path)
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert key.startswith("pt-") and r.stdout.count("pt-") == 1
    assert "shown only now" in r.stderr
    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    principal = KeyStore(db).verify(key)
    assert principal.name == "alice" and principal.is_admin
    listing = run("keys", "list", "--data-dir", tmp_path)
    assert "alice" in listing.stdout and key not in listing.stdout and key[:8] in listing.stdout
    assert run("keys", "rm", principal.id, "--data-dir", tmp_path).exit_code == 0
    assert KeyStore(db).verify(key) is None
    r = run("keys", "rm", principal.id, "--data-dir", tmp_path)
    assert r.exit_code == 2 and "no API key with id" in r.stderr
    db.dispose()


def test_avatars_add_list_show_rm(tmp_path, tiny_models):
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    a.write_bytes(files.png())
    b.write_bytes(files.png(fmt="JPEG"))
    lora = tmp_path / "toy.safetensors"
    lora.write_bytes(files.lora_kohya(tiny_models["sd15"]))
    data = tmp_path / "data"
    r = run("avatars", "add", "face", "lucy", a, b, "--data-dir", data)
    assert r.exit_code == 0, r.output
    assert "added face avatar 'lucy': 2 file(s)" in r.stderr
    r = run("avatars", "add", "lora", "toy", lora, "--trigger-words", "toy_face, blue", "--data-dir", data)
    assert r.exit_code == 0, r.output
    shown = json.loads(run("avatars", "show", "lora", "toy", "--data-dir", data).stdout)
    assert shown["trigger_words"] == ["toy_face", "blue"] and shown["family"] == "sd15"
    assert shown["filenames"] == ["toy.safetensors"]
    listing = run("avatars", "list", "--data-dir", data).stdout
    assert "lucy" in listing and "toy" in listing
    # the first key (an admin) takes over what the local user made; a second key sees none of it
    r = run("keys", "create", "bob", "--data-dir", data)
    assert r.exit_code == 2 and "the first API key must be an admin key" in " ".join(r.stderr.split())
    r = run("keys", "create", "root", "--admin", "--data-dir", data)
    assert r.exit_code == 0 and "(2 avatars, 0 characters, 0 books, 0 trainings)" in " ".join(r.stderr.split())
    root = r.stdout.strip()
    assert "lucy" not in run("avatars", "list", "--data-dir", data).stdout
    assert "lucy" in run("avatars", "list", "--key", root, "--data-dir", data).stdout
    key = run("keys", "create", "bob", "--data-dir", data).stdout.strip()
    assert "lucy" not in run("avatars", "list", "--key", key, "--data-dir", data).stdout
    r = run("avatars", "show", "face", "lucy", "--key", key, "--data-dir", data)
    assert r.exit_code == 2 and "no face avatar named 'lucy'" in r.stderr
    assert run("avatars", "add", "face", "lucy", a, "--key", key, "--data-dir", data).exit_code == 0
    r = run("avatars", "show", "face", "lucy", "--key", "pt-nope", "--data-dir", data)
    assert r.exit_code == 2 and "not a valid API key" in r.stderr
    # failures name the file and the reason
    r = run("avatars", "add", "lora", "bad", a, "--data-dir", data)
    assert r.exit_code == 2 and "a.png: a lora avatar must be a .safetensors file" in r.stderr
    r = run("avatars", "add", "face", "lucy", a, "--key", root, "--data-dir", data)
    assert r.exit_code == 2 and "you already have a face avatar named 'lucy'" in r.stderr
    assert run("avatars", "rm", "face", "lucy", "--key", root, "--data-dir", data).exit_code == 0
    r = run("avatars", "show", "face", "lucy", "--key", root, "--data-dir", data)
    assert r.exit_code == 2
    assert run("avatars", "show", "face", "lucy", "--key", key, "--data-dir", data).exit_code == 0
