"""`/v1/gallery` through the real HTTP stack on the tiny SD 1.5 model: every dialect's images are kept per key,
byte for byte; search, paging, delete; another key sees nothing; retention at start-up; recording off."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image
from sqlalchemy import update

from pictale.storage.gallery import DAY, GalleryImageRow
from tests.api.test_jobs_api import wait_for
from tests.api.test_keys_api import bearer, make_app

SMALL = {"steps": 2, "width": 64, "height": 64}
ITEM_KEYS = {
    "id", "object", "created", "job_id", "prompt", "negative_prompt", "seed", "width", "height", "model", "infotext",
    "parameters", "image_url", "thumbnail_url",
}  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models, tiny_clip):
    """Two ordinary keys, carol and bob (and the admin that made them)."""
    with make_app(tmp_path_factory.mktemp("gallery"), tiny_models, clip_model=str(tiny_clip)) as c:
        c.admin = c.post("/v1/keys", json={"name": "admin", "admin": True}).json()["key"]
        for name in ("carol", "bob"):
            setattr(c, name, c.post("/v1/keys", json={"name": name}, headers=bearer(c.admin)).json()["key"])
        yield c


def listing(app, key, **params) -> dict:
    r = app.get("/v1/gallery", headers=bearer(key), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def txt2img(app, key, prompt, **fields) -> list[bytes]:
    r = app.post("/sdapi/v1/txt2img", json={"prompt": prompt, **SMALL, **fields}, headers=bearer(key))
    assert r.status_code == 200, r.text
    return [base64.b64decode(b) for b in r.json()["images"]]


def test_a1111_batch_is_kept_byte_for_byte(app):
    sent = txt2img(app, app.carol, "a lighthouse at night", negative_prompt="blurry", batch_size=2, seed=21)
    body = listing(app, app.carol)
    assert body["object"] == "list" and body["has_more"] is False
    items = body["data"]
    assert len(items) == 2 and all(set(item) == ITEM_KEYS for item in items)
    assert [item["seed"] for item in items] == [22, 21]  # newest first: the batch's second image
    for item, data in zip(items, reversed(sent), strict=True):
        assert item["object"] == "gallery.image" and item["id"].startswith("img_")
        assert abs(item["created"] - time.time()) < 60 and isinstance(item["created"], int)
        assert (item["prompt"], item["negative_prompt"], item["width"], item["height"]) == (
            "a lighthouse at night", "blurry", 64, 64,
        )  # fmt: skip
        assert item["model"] and item["job_id"]
        assert item["infotext"] == Image.open(io.BytesIO(data)).info["parameters"]
        assert item["parameters"]["Prompt"] == "a lighthouse at night" and item["parameters"]["Seed"] == str(
            item["seed"]
        )
        assert item["image_url"] == f"/v1/gallery/{item['id']}/image"
        r = app.get(item["image_url"], headers=bearer(app.carol))
        assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "image/png"
        assert r.headers["content-disposition"] == f'inline; filename="pictale-{item["seed"]}.png"'
        thumb = app.get(item["thumbnail_url"], headers=bearer(app.carol))
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)  # never enlarged
        assert app.get(f"/v1/gallery/{item['id']}", headers=bearer(app.carol)).json() == item


def test_jobs_openai_and_imagine_are_kept_too(app):
    job = app.post("/v1/jobs", json={"prompt": "a jobs fox", **SMALL}, headers=bearer(app.bob)).json()
    done = wait_for(app, job["id"], lambda b: b["state"] == "done", headers=bearer(app.bob))
    r = app.post(
        "/v1/images/generations",
        json={"prompt": "an openai owl", "size": "64x64", "steps": 2, "response_format": "b64_json"},
        headers=bearer(app.bob),
    )
    assert r.status_code == 200, r.text
    chat = [{"role": "user", "content": "A whale jumps out of the waves!"}]
    r = app.post("/v1/story/imagine", json={"messages": chat, **SMALL}, headers=bearer(app.bob))
    assert r.status_code == 200, r.text
    items = listing(app, app.bob)["data"]
    assert len(items) == 3
    assert "whale" in items[0]["prompt"] and items[1]["prompt"] == "an openai owl"
    assert items[2]["prompt"] == "a jobs fox" and items[2]["job_id"] == done["id"]


def test_search_paging_and_limits(app):
    txt2img(app, app.carol, "50% off_sale banner", seed=1)
    txt2img(app, app.carol, "A LIGHTHOUSE by day", seed=2)
    assert [i["seed"] for i in listing(app, app.carol, q="lighthouse")["data"]] == [2, 22, 21]
    assert [i["seed"] for i in listing(app, app.carol, q="BLURRY")["data"]] == [22, 21]  # the negative prompt
    assert [i["seed"] for i in listing(app, app.carol, q="0% off_")["data"]] == [1]
    assert listing(app, app.carol, q="0%_off")["data"] == []  # % and _ match only themselves
    page = listing(app, app.carol, limit=3)
    assert [i["seed"] for i in page["data"]] == [2, 1, 22] and page["has_more"] is True
    rest = listing(app, app.carol, limit=3, before=page["data"][-1]["id"])
    assert [i["seed"] for i in rest["data"]] == [21] and rest["has_more"] is False
    for bad in (0, 201, "x"):
        assert app.get("/v1/gallery", params={"limit": bad}, headers=bearer(app.carol)).status_code == 422
    assert len(listing(app, app.carol, limit=200)["data"]) == 4
    r = app.get("/v1/gallery", params={"before": "img_nope"}, headers=bearer(app.carol))
    assert r.status_code == 422 and "before" in r.text


def test_book_candidates_are_not_kept(app):
    before = listing(app, app.carol, limit=200)["data"]
    story = "Sasha found a red kite in the park.\n\nThe wind took the kite over the hill."
    r = app.post("/v1/books", json={"story": story, "candidates": 2, **SMALL}, headers=bearer(app.carol))
    assert r.status_code == 202, r.text
    app.app.state.books.wait(r.json()["id"], 120)
    book = app.get(f"/v1/books/{r.json()['id']}", headers=bearer(app.carol)).json()
    assert book["state"] == "done" and all(len(p["candidates"]) == 2 for p in book["pages"])
    assert listing(app, app.carol, limit=200)["data"] == before


def test_another_key_sees_and_controls_nothing(app):
    carols = listing(app, app.carol)["data"]
    assert carols and all(i["prompt"] != "a lighthouse at night" for i in listing(app, app.bob)["data"])
    theirs, missing = carols[0]["id"], "img_0000000000000000"
    for image_id in (theirs, missing):
        for suffix in ("", "/image", "/thumbnail"):
            r = app.get(f"/v1/gallery/{image_id}{suffix}", headers=bearer(app.bob))
            assert r.status_code == 404 and r.json()["error"]["code"] == "image_not_found", r.text
        assert app.delete(f"/v1/gallery/{image_id}", headers=bearer(app.bob)).status_code == 404
    r = app.get("/v1/gallery", params={"before": theirs}, headers=bearer(app.bob))
    assert r.status_code == 422
    assert app.get("/v1/gallery").status_code == 401  # keys exist: no key, no gallery
    assert listing(app, app.carol)["data"] == carols


def test_delete_removes_row_and_files(app):
    item = listing(app, app.carol, q="banner")["data"][0]
    store = app.app.state.gallery.store
    image = store.get(_owner(app, app.carol), item["id"])
    files = [store.root / image.file, store._thumb_path(image.file)]
    assert all(p.is_file() for p in files)
    r = app.delete(f"/v1/gallery/{item['id']}", headers=bearer(app.carol))
    assert r.status_code == 200 and r.json() == {"id": item["id"], "object": "gallery.image", "deleted": True}
    assert not any(p.exists() for p in files)
    assert app.get(f"/v1/gallery/{item['id']}", headers=bearer(app.carol)).status_code == 404
    assert app.delete(f"/v1/gallery/{item['id']}", headers=bearer(app.carol)).status_code == 404
    assert "banner" not in str(listing(app, app.carol)["data"])


def test_a_missing_file_is_a_404_not_a_500(app):
    item = listing(app, app.carol)["data"][0]
    store = app.app.state.gallery.store
    image = store.get(_owner(app, app.carol), item["id"])
    (store.root / image.file).unlink()
    r = app.get(item["image_url"], headers=bearer(app.carol))
    assert r.status_code == 404 and "gone" in r.json()["error"]["message"]
    assert app.get(item["thumbnail_url"], headers=bearer(app.carol)).status_code == 200
    assert app.delete(f"/v1/gallery/{item['id']}", headers=bearer(app.carol)).status_code == 200


def _owner(app, key) -> str:
    """The principal id of a key (what the gallery is keyed by)."""
    return app.app.state.keys.verify(key).id


def test_start_up_purges_old_images_and_recording_can_be_off(tmp_path, tiny_models):
    with make_app(tmp_path, tiny_models, gallery_max_images=2) as c:
        for seed in (1, 2, 3):
            r = c.post("/sdapi/v1/txt2img", json={"prompt": f"cat {seed}", "seed": seed, **SMALL})
            assert r.status_code == 200
        kept = c.get("/v1/gallery").json()["data"]
        assert [i["seed"] for i in kept] == [3, 2]  # open mode: the local user's; the oldest went at once
        db = c.app.state.db
    with db.session() as s:  # the newest is 40 days old now
        s.execute(
            update(GalleryImageRow).where(GalleryImageRow.id == kept[0]["id"]).values(created_at=time.time() - 40 * DAY)
        )
    with make_app(tmp_path, tiny_models, gallery=False) as c:
        assert [i["seed"] for i in c.get("/v1/gallery").json()["data"]] == [2]
        assert c.post("/sdapi/v1/txt2img", json={"prompt": "a dog", **SMALL}).status_code == 200
        c.app.state.gallery.settle("local")
        assert [i["seed"] for i in c.get("/v1/gallery").json()["data"]] == [2]
        assert len([p for p in (tmp_path / "gallery").rglob("*") if p.is_file()]) == 2  # one image, one thumbnail
