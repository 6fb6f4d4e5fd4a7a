"""A 422 for training photos lists each file and its problem in `error.problems` (the web UI shows them per file)."""

from __future__ import annotations

from tests.api.conftest import make_client
from tests.api.test_trainings_api import PHOTOS


def test_each_bad_photo_is_listed_with_its_problem(tmp_path, tiny_models):
    files = [
        ("photos", ("a.png", PHOTOS[0], "image/png")),
        ("photos", ("again.png", PHOTOS[0], "image/png")),
        ("photos", ("broken.png", b"not a png", "image/png")),
    ]
    with make_client(tmp_path, tiny_models) as c:
        r = c.post("/v1/trainings", data={"name": "bad", "kind": "object", "resolution": "256"}, files=files)
    error = r.json()["error"]
    assert r.status_code == 422 and error["code"] == "invalid_training_photos" and error["param"] == "photos"
    by_file = {p["file"]: p["problem"] for p in error["problems"]}
    assert by_file["again.png"] == "near-duplicate of a.png"
    assert by_file["broken.png"].startswith("not a decodable image")
    assert "a.png" not in by_file
    assert by_file[None].startswith("too few photos")  # the set as a whole names no file
    # the message still says all of it in words
    assert "again.png: near-duplicate of a.png" in error["message"]


def test_other_errors_have_no_problems_list(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models) as c:
        r = c.post("/v1/trainings", data={"name": "x", "kind": "nope"})
    assert r.status_code == 422 and "problems" not in r.json()["error"]
