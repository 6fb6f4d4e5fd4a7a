"""`/v1/avatars` over HTTP: every kind end to end, per-key isolation (404, never 403), and bad uploads."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from tests.avatars import files
from tests.avatars.conftest import blob_files


def make_app(tmp_path, tiny_models, **overrides) -> TestClient:
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]), **overrides)
    return TestClient(create_app(settings))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def message(r) -> str:
    """The message of pictale's /v1 error shape: {"error": {message, type, param, code}}."""
    return r.json()["error"]["message"]


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_models):
    """An app with two keys: alice (admin) and bob."""
    with make_app(tmp_path_factory.mktemp("avatars-api"), tiny_models) as client:
        keys = client.app.state.keys
        _, alice = keys.create("alice", admin=True)
        _, bob = keys.create("bob")
        client.alice, client.bob = bearer(alice), bearer(bob)
        yield client


def upload(client, headers, kind, name, uploads, field="files", **form):
    parts = [(field, (n, data, "application/octet-stream")) for n, data in uploads]
    return client.post("/v1/avatars", data={"kind": kind, "name": name, **form}, files=parts, headers=headers)


def test_face_round_trip(api):
    a, b = files.png(seed=1), files.png((80, 40), seed=2)
    r = upload(api, api.alice, "face", "lucy", [("a.png", a), ("b.png", b)])
    assert r.status_code == 201, r.text
    body = r.json()
    created = body.pop("created")
    assert isinstance(created, int) and created > 1_700_000_000
    assert body == {
        "kind": "face",
        "name": "lucy",
        "size": len(a) + len(b),
        "trigger_words": [],
        "token": None,
        "family": None,
        "files": 2,
        "thumbnail_url": "/v1/avatars/face/lucy/thumbnail",
    }
    assert api.get("/v1/avatars/face/lucy", headers=api.alice).json() == body | {"created": created}
    thumb = api.get(body["thumbnail_url"], headers=api.alice)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 48)
    listing = api.get("/v1/avatars", headers=api.alice).json()
    assert listing["object"] == "list" and [x["name"] for x in listing["data"]] == ["lucy"]
    assert api.delete("/v1/avatars/face/lucy", headers=api.alice).json() == {
        "kind": "face",
        "name": "lucy",
        "deleted": True,
    }
    r = api.get("/v1/avatars/face/lucy", headers=api.alice)
    assert r.status_code == 404 and message(r) == "no face avatar named 'lucy'"


def test_every_kind_and_field_name(api, tiny_models):
    sd15 = tiny_models["sd15"]
    cases = [
        ("style", "cartoon1", [("s.png", files.png())], "file", {}),
        ("pose", "run", [("run.png", files.skeleton())], "files[]", {}),
        ("lora", "toy", [("toy.safetensors", files.lora_kohya(sd15))], "files", {"trigger_words": "toy_face, blue"}),
        ("lora", "peft", [("p.safetensors", files.lora_peft(sd15))], "files", {}),
        ("embedding", "ti", [("ti.safetensors", files.embedding(sd15))], "files", {"token": "my_ti"}),
    ]
    for kind, name, uploads, field, form in cases:
        r = upload(api, api.bob, kind, name, uploads, field=field, **form)
        assert r.status_code == 201, (kind, r.text)
    got = {(x["kind"], x["name"]): x for x in api.get("/v1/avatars", headers=api.bob).json()["data"]}
    assert got[("lora", "toy")]["trigger_words"] == ["toy_face", "blue"]
    assert got[("lora", "toy")]["family"] == "sd15" and got[("lora", "toy")]["thumbnail_url"] is None
    assert got[("embedding", "ti")]["token"] == "my_ti" and got[("embedding", "ti")]["family"] == "sd15"
    assert got[("pose", "run")]["thumbnail_url"] == "/v1/avatars/pose/run/thumbnail"
    only = api.get("/v1/avatars", params={"kind": "lora"}, headers=api.bob).json()["data"]
    assert [x["name"] for x in only] == ["peft", "toy"]
    r = api.get("/v1/avatars/lora/toy/thumbnail", headers=api.bob)
    assert r.status_code == 404 and message(r) == "lora avatars have no thumbnail"
    assert api.get("/v1/avatars/pose/run/thumbnail", headers=api.bob).status_code == 200
    # PATCH: trigger words, token, rename
    r = api.patch("/v1/avatars/lora/toy", json={"trigger_words": ["toy_face"], "name": "toy2"}, headers=api.bob)
    assert r.status_code == 200 and (r.json()["name"], r.json()["trigger_words"]) == ("toy2", ["toy_face"])
    r = api.patch("/v1/avatars/embedding/ti", json={"token": "<ti-new>"}, headers=api.bob)
    assert r.json()["token"] == "<ti-new>"
    r = api.patch("/v1/avatars/lora/toy2", json={"name": "peft"}, headers=api.bob)
    assert r.status_code == 409 and message(r) == "you already have a lora avatar named 'peft'"
    svc_registry = api.app.state.service.avatars
    assert svc_registry.resolve(api.app.state.keys.verify(api.bob["Authorization"][7:]).id, "lora", "toy2", 1)
    for kind, name in got:
        name = "toy2" if name == "toy" else name
        assert api.delete(f"/v1/avatars/{kind}/{name}", headers=api.bob).status_code == 200
    assert api.get("/v1/avatars", headers=api.bob).json()["data"] == []


def test_keys_never_see_each_others_avatars(api):
    assert upload(api, api.alice, "face", "secret", [("a.png", files.png())]).status_code == 201
    for method, path, kw in [
        ("get", "/v1/avatars/face/secret", {}),
        ("get", "/v1/avatars/face/secret/thumbnail", {}),
        ("patch", "/v1/avatars/face/secret", {"json": {"name": "stolen"}}),
        ("delete", "/v1/avatars/face/secret", {}),
    ]:
        r = api.request(method, path, headers=api.bob, **kw)
        assert r.status_code == 404, (method, path)
        assert message(r) == "no face avatar named 'secret'"
    assert api.get("/v1/avatars", headers=api.bob).json()["data"] == []
    # the same name is free for another key, and both stay separate
    assert upload(api, api.bob, "face", "secret", [("b.png", files.png(seed=4))]).status_code == 201
    assert api.get("/v1/avatars/face/secret", headers=api.alice).json()["size"] == len(files.png())
    assert api.get("/v1/avatars/face/secret", headers=api.bob).json()["size"] == len(files.png(seed=4))
    assert api.delete("/v1/avatars/face/secret", headers=api.bob).status_code == 200
    assert api.get("/v1/avatars/face/secret", headers=api.alice).status_code == 200
    api.delete("/v1/avatars/face/secret", headers=api.alice)


def test_avatar_routes_need_a_key(api):
    r = api.get("/v1/avatars")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "authentication_error"
    assert message(api.get("/v1/avatars", headers=bearer("pt-wrong"))) == "Invalid API key"


@pytest.fixture
def strict(tmp_path, tiny_models):
    with make_app(tmp_path, tiny_models, max_lora_mb=1, max_image_pixels=100 * 100, max_upload_images=3) as client:
        client.registry = client.app.state.avatars
        yield client


BAD = [
    ("face", [("notes.txt", b"hello, not an image")], 422, "invalid_upload",
     "notes.txt: not an image (expected PNG, JPEG, WebP or BMP)"),
    ("face", [("bomb.png", files.png((200, 120)))], 413, "upload_too_large",
     "bomb.png: 200x120 is 24000 pixels, more than the limit of 10000 pixels (max_image_pixels)"),
    ("style", [(f"{i}.png", files.png(seed=i)) for i in range(4)], 422, "invalid_upload",
     "too many images: 4 files, at most 3 per avatar (max_upload_images)"),
    ("lora", [("toy.ckpt", b"\x80\x02}q\x00.")], 422, "invalid_upload",
     "toy.ckpt: only .safetensors files are accepted; .ckpt/.pt/.pth/.bin files are Python pickles that can run "
     "code when loaded, and pictale never opens them (convert it to .safetensors)"),
    ("lora", [("weights.safetensors", files.random_tensors())], 422, "invalid_upload",
     "weights.safetensors: not a LoRA: none of its 2 tensors has LoRA names (lora_down/lora_up or lora_A/lora_B), "
     "e.g. 'bias'"),
    ("lora", [("huge.safetensors", b"\0" * (1024 * 1024 + 100))], 413, "upload_too_large",
     "huge.safetensors: larger than the 1 MB limit for lora files (max_lora_mb)"),
    ("embedding", [("broken.safetensors", b"\xff\x00\x00\x00\x00\x00\x00\x00{")], 422, "invalid_upload",
     "broken.safetensors: not a valid .safetensors file ("),
    ("pose", [("me.jpg", files.png(fmt="JPEG"))], 422, "invalid_upload",
     "me.jpg: a pose avatar needs an OpenPose skeleton image (coloured limbs on a black background), and this "
     "looks like a photo. To turn photos into skeletons, install OpenPose detector weights in "),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "uploads", "status", "code", "text"), BAD, ids=[b[1][0][0] for b in BAD])
def test_bad_uploads_are_refused_and_store_nothing(strict, kind, uploads, status, code, text):
    r = upload(strict, {}, kind, "thing", uploads)
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert (body["code"], body["param"]) == (code, "files")
    assert body["message"].startswith(text) if text.endswith(("(", " in ")) else body["message"] == text
    assert blob_files(strict.registry) == []
    assert strict.registry.list("local") == []


def test_bad_names_and_duplicates(strict):
    for name in ("Lucy Smith", "x" * 33):
        r = upload(strict, {}, "face", name, [("a.png", files.png())])
        assert r.status_code == 422
        assert message(r).startswith(f"avatar name {name!r} is not allowed: use one word of 1-32 characters")
    assert upload(strict, {}, "face", "lucy", [("a.png", files.png())]).status_code == 201
    stored = blob_files(strict.registry)
    r = upload(strict, {}, "face", "lucy", [("b.png", files.png(seed=3))])
    assert (r.status_code, r.json()["error"]["code"]) == (409, "avatar_exists")
    assert message(r) == "you already have a face avatar named 'lucy'"
    assert blob_files(strict.registry) == stored
    r = upload(strict, {}, "hat", "lucy", [("b.png", files.png())])
    assert r.status_code == 422 and message(r).startswith("unknown avatar kind 'hat'")
    r = strict.post("/v1/avatars", data={"kind": "face", "name": "nofile"})
    assert r.status_code == 422 and "no files uploaded" in message(r)
