"""The `pictale` command, run in-process with typer's runner."""

from __future__ import annotations

import shutil

from PIL import Image
from typer.testing import CliRunner

from pictale.cli.main import app

runner = CliRunner()


def test_generate_writes_pngs_with_infotext(tmp_path, tiny_models):
    out = tmp_path / "out"
    args = ["generate", "a photo of a cat", "--steps", "3", "--seed", "9", "--size", "64x64", "-n", "2"]
    args += ["--sampler", "DPM++ 2M Karras", "--negative", "blurry", "--model", str(tiny_models["sd15"])]
    r = runner.invoke(app, [*args, "-o", str(out), "--data-dir", str(tmp_path / "data")])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-9.png", "00001-10.png"]
    img = Image.open(files[1])
    assert img.size == (64, 64)
    text = img.info["parameters"]
    assert text.startswith(
        "a photo of a cat\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras"
    )
    assert "Seed: 10" in text


def test_generate_bad_size_and_bad_model(tmp_path, tiny_models):
    r = runner.invoke(app, ["generate", "x", "--size", "big", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--size must look like 512x768" in r.output
    r = runner.invoke(app, ["generate", "x", "--model", str(tmp_path / "m.ckpt"), "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "m.ckpt" in r.output


def test_make_tiny_and_models_list(tmp_path):
    r = runner.invoke(app, ["models", "make-tiny", str(tmp_path / "tiny")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "tiny" / "tiny-sd15" / "model_index.json").exists()
    assert (tmp_path / "tiny" / "tiny-sd15.safetensors").exists()
    ckpts = tmp_path / "data" / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copytree(tmp_path / "tiny" / "tiny-sdxl", ckpts / "tiny-sdxl")
    r = runner.invoke(app, ["models", "list", "--data-dir", str(tmp_path / "data")], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "tiny-sdxl [" in r.output and "sdxl" in r.output


def test_pull_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["models", "pull", "org/some-model", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "could not download org/some-model" in r.output


def test_generate_with_avatar_tokens(tmp_path, tiny_models):
    from tests.avatars import files

    data = tmp_path / "data"
    face = tmp_path / "lucy.png"
    face.write_bytes(files.png(seed=1))
    env = {"PICTALE_MODELS_DIR": str(tiny_models["sd15"].parent)}
    r = runner.invoke(app, ["avatars", "add", "face", "lucy", str(face), "--data-dir", str(data)], env=env)
    assert r.exit_code == 0, r.output
    common = ["--steps", "2", "--seed", "3", "--size", "64x64", "--model", str(tiny_models["sd15"])]
    common += ["--data-dir", str(data)]
    r = runner.invoke(app, ["generate", "<be-face:lucy:0.6> a girl", *common, "-o", str(tmp_path / "a")], env=env)
    assert r.exit_code == 0, r.output
    text = Image.open(next((tmp_path / "a").glob("*.png"))).info["parameters"]
    assert text.startswith("<be-face:lucy:0.6> a girl\n") and 'Avatars: "face:lucy:0.6"' in text
    r = runner.invoke(app, ["generate", "<be-face:lucie:0.6> a girl", *common, "-o", str(tmp_path / "b")], env=env)
    assert r.exit_code == 2
    assert "did you mean 'lucy'?" in " ".join(r.output.split())


def test_models_list_shows_flux_variant_and_licence(tmp_path, monkeypatch):
    from rich.console import Console

    from pictale.engine.tiny.flux import write_tiny_flux

    monkeypatch.setattr("pictale.cli.models.console", Console(width=300))  # one line per model

    ckpts = tmp_path / "data" / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    for variant in ("schnell", "dev"):
        write_tiny_flux(ckpts, variant)
    r = runner.invoke(app, ["models", "list", "--data-dir", str(tmp_path / "data")], terminal_width=250)
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]] for line in r.output.splitlines()
            if line.startswith("│") and "tiny-flux" in line}  # fmt: skip
    assert {title.split(" [")[0]: cells for title, cells in rows.items()} == {
        "tiny-flux-dev": ["flux", "dev", "FLUX.1 [dev] Non-Commercial License"],
        "tiny-flux-schnell": ["flux", "schnell", "Apache-2.0"],
    }
    assert all(title.endswith("]") for title in rows)  # the hash stays in the title
