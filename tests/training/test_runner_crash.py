"""The real runner resumed after a crash between saving a checkpoint and sampling it (what `kill -9` at that moment
leaves: the checkpoint on disk, no scores for it): the resumed run samples and scores it before going on."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.training import state
from tests.api.test_trainings_api import photo

PHOTOS = [photo(i, 256) for i in range(6)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy 2-core box: OpenMP threads spinning against each other cost 100x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_checkpoint_saved_but_never_sampled_is_sampled_on_resume(tmp_path, tiny_models):
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]))
    with TestClient(create_app(settings)) as client:
        fields = {"name": "cup", "kind": "object", "steps": "12", "resolution": "256", "rank": "4", "seed": "5"}
        fields.update(checkpoint_every="4", sample_prompts="a photo of {trigger}")
        files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
        made = client.post("/v1/trainings", data=fields, files=files).json()
        tid = made["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/trainings/{tid}").json()["step"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.delete(f"/v1/trainings/{tid}")
        client.app.state.trainings.wait(tid, 120)
        assert client.get(f"/v1/trainings/{tid}").json()["state"] == "cancelled"
        # what a crash right after `write_checkpoint` leaves: the checkpoint, but no samples or scores for it
        workdir = client.app.state.trainings.workdirs / tid
        latest = state.checkpoints(workdir / "state")[-1][0]
        scores = workdir / "scores.json"
        history = [h for h in json.loads(scores.read_text()) if h["step"] != latest]
        scores.write_text(json.dumps(history))
        shutil.rmtree(workdir / "samples" / f"{latest:06d}")

        assert client.post(f"/v1/trainings/{tid}/resume").status_code == 202
        client.app.state.trainings.wait(tid, 300)
        final = client.get(f"/v1/trainings/{tid}").json()
        assert final["state"] == "done" and final["step"] == 12, final
        redone = {h["step"]: h for h in json.loads(scores.read_text())}
        assert latest in redone and redone[latest]["likeness"] is not None  # sampled and scored on resume
        assert all(p.endswith(".png") for p in redone[latest]["images"])
        assert (workdir / "samples" / f"{latest:06d}" / "00.png").is_file()
        assert sorted(redone) == [0, 4, 8, 12] or final["chosen"]["reason"].endswith("in a row")
