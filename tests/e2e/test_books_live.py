"""A book on a live `pictale serve`: the server is killed (SIGKILL) mid-book; the next start finishes it."""

from __future__ import annotations

import time

import httpx

from tests.e2e.live import live_server

STORY = "\n\n".join(f"Page {i}: the little fox walks to the river and looks at the stars." for i in range(1, 7))


def wait_for(client: httpx.Client, book_id: str, done, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = client.get(f"/v1/books/{book_id}").json()
        if done(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"book did not get there: {view}")


def test_book_survives_a_killed_server(tmp_path, tiny_models, tiny_clip):
    env = {"PICTALE_CLIP_MODEL": str(tiny_clip)}
    body = {"story": STORY, "candidates": 2, "width": 64, "height": 64, "steps": 12, "seed": 9}
    with live_server(tmp_path, str(tiny_models["sd15"]), env=env) as server:
        client = httpx.Client(base_url=server["base"], timeout=30)
        r = client.post("/v1/books", json=body)
        assert r.status_code == 202, r.text
        book_id = r.json()["id"]
        first = wait_for(client, book_id, lambda v: v["pages_done"] >= 1)
        server["proc"].kill()  # no shutdown: a crash
        server["proc"].wait(10)
    assert first["pages_done"] < 6, "the book finished before the kill; make it longer"
    kept = [(c["seed"], c["scores"]) for c in first["pages"][0]["candidates"]]
    with live_server(tmp_path, str(tiny_models["sd15"]), env=env) as server:
        client = httpx.Client(base_url=server["base"], timeout=30)
        done = wait_for(client, book_id, lambda v: v["state"] not in ("queued", "running"))
        job = client.get(f"/v1/jobs/{book_id}").json()
        pdf = client.get(f"/v1/books/{book_id}/export.pdf")
    assert done["state"] == "done" and done["pages_done"] == 6, done["error"]
    assert [(c["seed"], c["scores"]) for c in done["pages"][0]["candidates"]] == kept  # not made again
    assert [c["seed"] for c in done["pages"][5]["candidates"]] == [5009, 5010]
    assert job["state"] == "done" and job["result"]["id"] == book_id
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
