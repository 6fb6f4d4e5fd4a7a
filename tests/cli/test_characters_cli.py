"""`pictale characters` on a data dir, without a server: add, list, show, edit, rm, per key."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pictale.avatars.characters import CharacterStore
from pictale.cli.main import app
from pictale.storage.db import Database

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_add_show_list_edit_rm(tmp_path):
    data = ["--data-dir", tmp_path]
    r = run(
        "characters",
        "add",
        "Sasha",
        "--description",
        "a girl with red hair",
        "--avatars",
        "<be-face:lucy:0.4> <be-lora:toy:0.8>",
        "--negative",
        "blurry",
        *data,
    )
    assert r.exit_code == 0, r.output
    assert "added character 'Sasha': use <be-char:Sasha> in a prompt" in r.stderr
    shown = json.loads(run("characters", "show", "sasha", *data).stdout)
    assert shown == {
        "object": "character",
        "name": "Sasha",
        "description": "a girl with red hair",
        "avatars": "<be-face:lucy:0.4> <be-lora:toy:0.8>",
        "negative_prompt": "blurry",
        "seed_policy": "random",
        "seed": None,
        "created": shown["created"],
        "updated": shown["updated"],
    }
    assert run("characters", "add", "tom", "--seed", "42", *data).exit_code == 0
    listing = run("characters", "list", *data).stdout
    assert "Sasha" in listing and "a girl with red hair" in listing and "tom" in listing and "42" in listing

    r = run("characters", "edit", "sasha", "--description", "a girl with short red hair", "--seed", "7", *data)
    assert r.exit_code == 0 and "updated character 'Sasha'" in r.stderr
    shown = json.loads(run("characters", "show", "Sasha", *data).stdout)
    assert (shown["description"], shown["avatars"], shown["seed_policy"], shown["seed"]) == (
        "a girl with short red hair",
        "<be-face:lucy:0.4> <be-lora:toy:0.8>",
        "fixed",
        7,
    )
    assert run("characters", "edit", "sasha", "--random-seed", *data).exit_code == 0
    assert json.loads(run("characters", "show", "Sasha", *data).stdout)["seed_policy"] == "random"
    assert run("characters", "edit", "sasha", "--rename", "alex", *data).exit_code == 0

    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    assert CharacterStore(db).names("local") == ["alex", "tom"]  # the CLI acts as the local user by default
    db.dispose()

    r = run("characters", "rm", "ALEX", *data)
    assert r.exit_code == 0 and "removed character 'alex'" in r.stderr
    r = run("characters", "show", "alex", *data)
    assert r.exit_code == 2 and "no character named 'alex'" in r.stderr


def test_errors_exit_2_with_the_message(tmp_path):
    data = ["--data-dir", tmp_path]
    r = run("characters", "add", "red hair", *data)
    assert r.exit_code == 2
    assert "character name 'red hair' is not allowed" in " ".join(r.stderr.split())
    r = run("characters", "add", "sasha", "--avatars", "<be-face:lucy:0.4> red hair", *data)
    assert r.exit_code == 2 and "avatars may only contain avatar tokens" in " ".join(r.stderr.split())
    assert run("characters", "add", "sasha", *data).exit_code == 0
    r = run("characters", "add", "SASHA", *data)
    assert r.exit_code == 2 and "you already have a character named 'sasha'" in r.stderr
    r = run("characters", "edit", "sasha", "--seed", "1", "--random-seed", *data)
    assert r.exit_code == 2 and "contradict" in r.stderr
    r = run("characters", "edit", "nobody", "--description", "x", *data)
    assert r.exit_code == 2 and "no character named 'nobody'" in r.stderr


def test_keys_own_their_characters(tmp_path):
    data = ["--data-dir", tmp_path]
    assert run("characters", "add", "sasha", "--description", "local one", *data).exit_code == 0
    root = run("keys", "create", "root", "--admin", *data).stdout.strip()  # the first key adopts sasha
    assert run("characters", "add", "sasha", "--description", "local one", *data).exit_code == 0
    assert "local one" in run("characters", "list", "--key", root, *data).stdout
    key = run("keys", "create", "bob", *data).stdout.strip()
    assert "sasha" not in run("characters", "list", "--key", key, *data).stdout
    r = run("characters", "show", "sasha", "--key", key, *data)
    assert r.exit_code == 2 and "no character named 'sasha'" in r.stderr
    assert run("characters", "add", "sasha", "--description", "bob's", "--key", key, *data).exit_code == 0
    assert json.loads(run("characters", "show", "sasha", "--key", key, *data).stdout)["description"] == "bob's"
    assert json.loads(run("characters", "show", "sasha", *data).stdout)["description"] == "local one"
    r = run("characters", "list", "--key", "pt-nope", *data)
    assert r.exit_code == 2 and "not a valid API key" in r.stderr


def test_generate_expands_characters_with_their_fixed_seed(tmp_path, tiny_models):
    from PIL import Image

    data = ["--data-dir", tmp_path / "data"]
    r = run("characters", "add", "tom", "--description", "a tall boy", "--negative", "blurry", "--seed", "77", *data)
    assert r.exit_code == 0, r.output
    common = ["--steps", "2", "--size", "64x64", "--model", tiny_models["sd15"], *data]
    assert run("generate", "<be-char:tom> on a hill", *common, "-o", tmp_path / "a").exit_code == 0
    hand = ["generate", "a tall boy on a hill", "--negative", "blurry", "--seed", "77"]
    assert run(*hand, *common, "-o", tmp_path / "b").exit_code == 0
    (a,), (b,) = list((tmp_path / "a").glob("*.png")), list((tmp_path / "b").glob("*.png"))
    assert a.name == "00000-77.png"  # seed -1 became the character's seed
    img = Image.open(a)
    assert img.convert("RGB").tobytes() == Image.open(b).convert("RGB").tobytes()
    text = img.info["parameters"]
    assert text.startswith("<be-char:tom> on a hill\nSteps: 2, ") and "Characters: tom, " in text
    r = run("generate", "<be-char:tim> on a hill", *common, "-o", tmp_path / "c")
    assert r.exit_code == 2 and "unknown character 'tim' in '<be-char:tim>'; did you mean 'tom'?" in r.stderr
