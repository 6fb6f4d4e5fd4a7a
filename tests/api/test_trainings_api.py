"""`/v1/trainings` with a fake trainer: 202 and the object, events in order, cancel, resume, restart, isolation,
bad fields, and the registered LoRA avatar (the real tiny LoRA file) used in a prompt afterwards."""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from tests.api.fake_trainer import FakeFactory


def make_client(tmp_path, tiny_models, factory, **overrides) -> TestClient:
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]), **overrides)
    return TestClient(create_app(settings, training_runner=factory))


def photo(seed: int, size: int = 512) -> bytes:
    """A distinct, sharp photo (noise: no near-duplicates, nothing blurry)."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size * 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PHOTOS = [photo(i) for i in range(6)]


def form(name: str, **fields) -> dict:
    return {"name": name, "kind": "object", "steps": "20", **{k: str(v) for k, v in fields.items()}}


def start(client, name: str, headers=None, **fields) -> dict:
    files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
    r = client.post("/v1/trainings", data=form(name, **fields), files=files, headers=headers or {})
    assert r.status_code == 202, r.text
    return r.json()


def finish(client, training_id: str, headers=None, timeout: float = 60) -> dict:
    client.app.state.trainings.wait(training_id, timeout)
    return client.get(f"/v1/trainings/{training_id}", headers=headers or {}).json()


def events_of(client, training_id: str, path: str = "trainings") -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    with client.stream("GET", f"/v1/{path}/{training_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if not line:
                if block:
                    out.append((block["event"], json.loads(block["data"])))
                block = {}
                continue
            if not line.startswith(":"):
                key, _, value = line.partition(": ")
                block[key] = value
    return out


@pytest.fixture(scope="module")
def factory(tiny_models):
    return FakeFactory(tiny_models["lora_peft"])


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models, factory):
    with make_client(tmp_path_factory.mktemp("trainings"), tiny_models, factory) as c:
        yield c


@pytest.fixture(scope="module")
def done(client) -> dict:
    made = start(client, "sasha", trigger="sasha_toy", character="Sasha", sample_prompts="a photo of {trigger}")
    return {"accepted": made, "final": finish(client, made["id"])}


def test_post_answers_202_with_the_training_object(done, tiny_models):
    made = done["accepted"]
    assert made["object"] == "training" and made["state"] in ("queued", "running")
    assert made["name"] == "sasha" and made["trigger"] == "sasha_toy" and made["kind"] == "object"
    assert made["family"] == "sd15" and made["photos"] == 6 and made["total"] == 20
    assert made["settings"]["steps"] == 20 and made["settings"]["sample_prompts"] == ["a photo of {trigger}"]
    assert made["events"].endswith(f"/v1/trainings/{made['id']}/events")
    for key in ("stage", "step", "loss", "eta", "samples", "chosen", "avatar", "character", "error"):
        assert key in made


def test_a_finished_training_shows_samples_choice_and_avatar(client, done):
    final = done["final"]
    assert final["state"] == "done" and final["stage"] == "done" and final["step"] == 20
    assert final["loss"] == 0.05 and final["eta"] is None and final["error"] is None
    # the stored loss curve: every step's loss, in order (a page opened later draws it)
    assert final["losses"] == [[step, round(1.0 / step, 4)] for step in range(1, 21)]
    assert [s["step"] for s in final["samples"]] == [10, 20]
    assert final["checkpoints"] == [5, 10, 15, 20]
    sample = final["samples"][1]
    assert sample["scores"] == {"likeness": 0.7, "adherence": 0.3} and len(sample["images"]) == 2
    r = client.get(sample["images"][1])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).getpixel((0, 0)) == (20, 40, 90)
    assert final["chosen"] == {"step": 20, "scores": sample["scores"], "reason": "best likeness at step 20"}
    assert final["avatar"] == "sasha" and final["prompt"] == "<be-lora:sasha:0.8> sasha_toy"
    assert final["character"] == "Sasha"
    listed = client.get("/v1/trainings").json()["data"]
    assert [t["id"] for t in listed] == [final["id"]]


def test_stages_and_events_come_in_order(client, done):
    tid = done["final"]["id"]
    for path in ("trainings", "jobs"):  # the training is a job: both streams give the same events
        events = events_of(client, tid, path)
        names = [name for name, _ in events]
        assert names[0] == "started" and names[-1] == "done"
        stages = [data["stage"] for name, data in events if name == "stage"]
        assert stages == ["caching", "training", "sampling", "training", "sampling", "training", "saving", "done"]
        steps = [data["step"] for name, data in events if name == "step"]
        assert steps == list(range(1, 21))
        samples = [(i, data) for i, (name, data) in enumerate(events) if name == "sample"]
        assert [d["step"] for _, d in samples] == [10, 20]
        assert samples[0][1]["images"] == [f"/v1/trainings/{tid}/samples/10/0", f"/v1/trainings/{tid}/samples/10/1"]
        assert names[samples[0][0] - 1] == "stage" and names.index("sample") > names.index("step")
        step_10 = next(i for i, (n, d) in enumerate(events) if n == "step" and d["step"] == 10)
        step_11 = next(i for i, (n, d) in enumerate(events) if n == "step" and d["step"] == 11)
        assert step_10 < samples[0][0] < step_11
        assert [d["step"] for n, d in events if n == "checkpoint"] == [5, 10, 15, 20]
        assert events[-1][1]["result"]["avatar"] == "sasha"


def test_the_avatar_and_character_work_in_a_prompt(client, done):
    lora = client.get("/v1/avatars/lora/sasha").json()
    assert lora["trigger_words"] == ["sasha_toy"]
    ch = client.get("/v1/characters/Sasha").json()
    assert ch["avatars"] == "<be-lora:sasha:0.8>" and "sasha_toy" in ch["description"]
    body = {"width": 64, "height": 64, "steps": 2, "seed": 3}
    base = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "sasha_toy, a toy"})
    with_lora = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "<be-lora:sasha:0.8> sasha_toy, a toy"})
    assert with_lora.status_code == 200, with_lora.text
    assert json.loads(with_lora.json()["info"])["extra_generation_params"]["Avatars"] == "lora:sasha:0.8"
    assert with_lora.json()["images"][0] != base.json()["images"][0]  # the LoRA acts on the pixels
    via_char = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "<be-char:Sasha>, a toy"})
    assert via_char.status_code == 200 and "lora:sasha:0.8" in json.loads(via_char.json()["info"])["infotexts"][0]


def test_cancel_leaves_no_avatar_and_resume_goes_on_from_the_saved_step(client, factory):
    factory.pause_at, factory.paused = 8, __import__("threading").Event()
    made = start(client, "tom")
    assert factory.paused.wait(30)
    r = client.delete(f"/v1/trainings/{made['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["stage"] == "cancelled"
    assert r.json()["step"] == 7 and r.json()["avatar"] is None
    assert client.get("/v1/avatars/lora/tom").status_code == 404
    assert client.post(f"/v1/trainings/{made['id']}/resume").status_code == 202
    final = finish(client, made["id"])
    assert final["state"] == "done" and final["avatar"] == "tom" and final["step"] == 20
    assert factory.runners[-1].resumed_from == 5  # the last saved state, not step 0 and not the lost step 7
    steps = [d["step"] for n, d in events_of(client, made["id"]) if n == "step"]
    assert steps == list(range(6, 21))
    assert factory.runners[-2].closed and factory.runners[-1].closed
    assert client.post(f"/v1/trainings/{made['id']}/resume").status_code == 409  # finished


def test_generation_is_served_between_chunks(client, factory):
    """One worker trains and serves: a generation asked mid-training finishes before the training does."""
    factory.pause_at = None
    made = start(client, "between", steps=2000)
    client.app.state.trainings.wait(made["id"], 0.3)
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 200
    view = client.get(f"/v1/trainings/{made['id']}").json()
    assert view["state"] == "running" and 0 < view["step"] < 2000 and view["eta"] is not None
    assert client.delete(f"/v1/trainings/{made['id']}").json()["state"] == "cancelled"


def test_other_sources_zip_and_face_avatars(client, factory):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, data in enumerate(PHOTOS):
            z.writestr(f"set/p{i}.png", data)
        z.writestr("set/p0.txt", "zipped_toy on a table")
        z.writestr("__MACOSX/set/._p0.png", b"junk")
    r = client.post("/v1/trainings", data=form("zipped"), files={"zip": ("set.zip", buf.getvalue(), "application/zip")})
    assert r.status_code == 202, r.text
    assert r.json()["photos"] == 6
    tid = r.json()["id"]
    doc = client.app.state.trainings.store.get(tid)["document"]
    first = doc["photos"][0]
    assert first["caption"] == "zipped_object, zipped_toy on a table" and first["source"].endswith("p0.png")
    assert first["caption_from"] == "file" and doc["photos"][1]["caption_from"] == "template"
    client.delete(f"/v1/trainings/{tid}")
    upload = [("files", (f"f{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS[:5])]
    assert client.post("/v1/avatars", data={"kind": "face", "name": "kid"}, files=upload).status_code == 201
    r = client.post("/v1/trainings", data={**form("fromfaces"), "face_avatars": "kid"})
    assert r.status_code == 202 and r.json()["photos"] == 5, r.text
    client.delete(f"/v1/trainings/{r.json()['id']}")


@pytest.mark.parametrize(
    ("fields", "status", "param", "said"),
    [
        ({"kind": "dog"}, 422, "kind", "face, character, style, object"),
        ({"name": "Bad Name!"}, 422, "name", "Bad Name!"),
        ({"trigger": "two words"}, 422, "trigger", "two words"),
        ({"rank": "0"}, 422, "rank", "1 to 256"),
        ({"rank": "many"}, 422, "rank", "rank"),
        ({"steps": "0"}, 422, "steps", "steps"),
        ({"learning_rate": "-1"}, 422, "learning_rate", "learning_rate"),
        ({"optimizer": "sgd"}, 422, "optimizer", "adamw"),
        ({"resolution": "500"}, 422, "resolution", "multiple of 64"),
        ({"batch_size": "99"}, 422, "batch_size", "batch_size"),
        ({"seed": "-5"}, 422, "seed", "seed"),
        ({"character": "no good!"}, 422, "character", "no good!"),
        ({"base_model": "no-such-model"}, 404, "base_model", "no-such-model"),
        ({"name": "sasha"}, 409, "name", "'sasha'"),
        ({"character": "sasha"}, 409, "character", "'sasha'"),
    ],
)
def test_bad_fields_are_refused_by_name(client, done, fields, status, param, said):
    files = [("photos", ("p.png", PHOTOS[0], "image/png"))]
    r = client.post("/v1/trainings", data={**form("fresh"), **fields}, files=files)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and said in error["message"]


def test_bad_photos_and_untrainable_bases(client, tiny_models):
    workdirs = client.app.state.trainings.workdirs
    before = set(workdirs.iterdir()) if workdirs.is_dir() else set()
    r = client.post("/v1/trainings", data=form("nophotos"))
    assert r.status_code == 422 and r.json()["error"]["param"] == "photos"
    files = [("photos", ("ok.png", PHOTOS[0], "image/png")), ("photos", ("broken.png", b"not a png", "image/png"))]
    r = client.post("/v1/trainings", data=form("broken"), files=files)
    error = r.json()["error"]
    assert r.status_code == 422 and error["param"] == "photos" and "broken.png" in error["message"]
    assert "ok.png" not in error["message"] and "1 file(s) cannot be used" in error["message"]  # and too few
    r = client.post("/v1/trainings", data=form("badzip"), files={"zip": ("x.zip", b"nope", "application/zip")})
    error = r.json()["error"]
    assert r.status_code == 422 and error["code"] == "invalid_training_photos" and "x.zip" in error["message"]
    r = client.post("/v1/trainings", data={**form("faces"), "face_avatars": "nobody"})
    assert r.status_code == 422 and "'nobody'" in r.json()["error"]["message"]
    ok = [("photos", ("p.png", PHOTOS[0], "image/png"))]
    for key, said in (("sd3", "sd3"), ("flux_schnell", "schnell")):
        r = client.post("/v1/trainings", data=form("base", base_model=str(tiny_models[key])), files=ok)
        error = r.json()["error"]
        assert r.status_code == 422 and error["param"] == "base_model" and said in error["message"]
    assert (set(workdirs.iterdir()) if workdirs.is_dir() else set()) == before  # nothing stayed behind


def test_restart_resumes_automatically(tmp_path, tiny_models):
    first = FakeFactory(tiny_models["lora_peft"], pause_at=13)
    with make_client(tmp_path, tiny_models, first) as c:
        made = start(c, "restarted")
        assert first.paused.wait(30)
    # the lifespan ended mid-training: the row stays "running", the state saved at step 10 is on disk
    second = FakeFactory(tiny_models["lora_peft"])
    with make_client(tmp_path, tiny_models, second) as c:
        row = c.app.state.trainings.store.get(made["id"])
        assert row["state"] in ("queued", "running")
        final = finish(c, made["id"])
        assert final["state"] == "done" and final["avatar"] == "restarted"
        assert second.runners[0].resumed_from == 10
        assert [s["step"] for s in final["samples"]] == [10, 20]  # the sample of before the restart is kept
    with make_client(tmp_path, tiny_models, second) as c:  # a training that ended before this start: its end
        events = events_of(c, made["id"])
        assert [n for n, _ in events] == ["done"] and events[0][1]["result"]["avatar"] == "restarted"


def test_another_keys_training_is_404(tmp_path, tiny_models):
    app = create_app(Settings(data_dir=tmp_path, model=str(tiny_models["sd15"])), training_runner=FakeFactory(
        tiny_models["lora_peft"]))  # fmt: skip
    with TestClient(app) as c:
        a = {"Authorization": f"Bearer {app.state.keys.create('a')[1]}"}
        b = {"Authorization": f"Bearer {app.state.keys.create('b')[1]}"}
        made = start(c, "mine", headers=a)
        finish(c, made["id"], headers=a)
        tid = made["id"]
        for method, url in (
            ("GET", f"/v1/trainings/{tid}"),
            ("DELETE", f"/v1/trainings/{tid}"),
            ("POST", f"/v1/trainings/{tid}/resume"),
            ("GET", f"/v1/trainings/{tid}/events"),
            ("GET", f"/v1/trainings/{tid}/samples/10/0"),
            ("GET", f"/v1/jobs/{tid}"),
        ):
            r = c.request(method, url, headers=b)
            assert r.status_code == 404, (method, url, r.text)
        assert c.get("/v1/trainings", headers=b).json()["data"] == []
        assert c.get(f"/v1/trainings/{tid}", headers=a).json()["avatar"] == "mine"
        assert c.get("/v1/avatars/lora/mine", headers=b).status_code == 404
