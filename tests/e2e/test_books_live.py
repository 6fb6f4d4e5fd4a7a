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


def test_characters_through_real_clients(tmp_path, tiny_models):
    """webuiapi and openai, unmodified, call a character with <be-char:NAME> on a live server."""
    import base64
    import io

    import openai
    import webuiapi
    from PIL import Image

    with live_server(tmp_path, str(tiny_models["sd15"])) as server:
        http = httpx.Client(base_url=server["base"], timeout=30)
        r = http.post("/v1/characters", json={"name": "sasha", "description": "a girl with red hair", "seed": 77})
        assert r.status_code == 201, r.text
        a1111 = webuiapi.WebUIApi(host="127.0.0.1", port=server["port"], sampler="Euler a", steps=2)
        result = a1111.txt2img(prompt="<be-char:sasha>, on a swing", width=64, height=64, seed=-1)
        assert result.info["seed"] == 77  # the character's fixed seed
        assert "Characters: sasha" in result.info["infotexts"][0]
        client = openai.OpenAI(base_url=server["base"] + "/v1", api_key="anything", max_retries=0, timeout=60)
        img = client.images.generate(
            prompt="<be-char:sasha>, on a swing", size="64x64", response_format="b64_json", extra_body={"steps": 2}
        )
        assert img.data[0].revised_prompt == "a girl with red hair, on a swing"
        png = Image.open(io.BytesIO(base64.b64decode(img.data[0].b64_json)))
        assert "Characters: sasha" in png.info["parameters"]
