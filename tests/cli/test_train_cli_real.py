"""`pictale train` with the real trainer (`training.runner`) on the tiny SD 1.5: photos in a folder become a
registered LoRA avatar with pictale's metadata; a folder with too few photos is one line and a non-zero exit."""

from __future__ import annotations

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from pictale.avatars.tensors import inspect_lora
from pictale.cli.avatars import opened
from pictale.cli.main import app
from tests.api.test_trainings_api import photo

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core box: OpenMP threads spinning against each other cost 100x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def photo_dir(folder, count: int):
    folder.mkdir()
    for i in range(count):
        (folder / f"p{i}.png").write_bytes(photo(i, 256))
    return folder


def test_train_real_runner_registers_a_usable_lora(tmp_path, tiny_models, one_thread):
    photos = photo_dir(tmp_path / "photos", 6)
    data = ["--data-dir", tmp_path / "data"]
    r = run(
        "train", photos, "--name", "teapot", "--kind", "object", "--steps", 8, "--resolution", 256, "--rank", 4,
        "--seed", 7, "--base-model", tiny_models["sd15"], *data,
    )  # fmt: skip
    said = " ".join(r.stderr.split())
    assert r.exit_code == 0, r.output
    assert "avatar 'teapot' registered: <be-lora:teapot:0.8> teapot_object" in said and "chosen: step 8" in said
    listed = run("avatars", "list", *data)
    assert listed.exit_code == 0 and "teapot" in listed.output + listed.stderr
    # the registered file: the registry's copy of the exported LoRA, with pictale's metadata
    with opened(tmp_path / "data", None, None) as (registry, owner):
        ref = registry.resolve(owner, "lora", "teapot", 1.0)
    assert ref is not None and ref.family == "sd15" and "teapot_object" in ref.trigger_words
    with safe_open(str(ref.files[0]), "np") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert keys and all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert meta["ss_network_dim"] == "4" and meta["pictale_preset"] == "object"
    assert meta["pictale_chosen_step"] == "8" and meta["pictale_base_model"].startswith("tiny-sd15")
    assert inspect_lora(ref.files[0], "teapot.safetensors").family == "sd15"


def test_train_real_runner_too_few_photos_is_one_line(tmp_path, tiny_models):
    photos = photo_dir(tmp_path / "photos", 2)
    data = ["--data-dir", tmp_path / "data"]
    r = run(
        "train", photos, "--name", "teapot", "--kind", "object", "--steps", 8, "--resolution", 256,
        "--base-model", tiny_models["sd15"], *data,
    )  # fmt: skip
    assert r.exit_code != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "too few photos: 2" in errors[0] and "needs at least" in errors[0], r.stderr
    assert not list((tmp_path / "data").rglob("*.safetensors"))  # nothing trained, nothing registered
