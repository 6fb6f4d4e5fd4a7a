"""`/v1/books`: pages, scored candidates, ranking checked by hand, regenerate, resume, exports, errors."""

from __future__ import annotations

import io
import json
import threading

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader
from transformers import CLIPModel, CLIPProcessor

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.storage.infotext import parse_infotext
from pictale.story import book_run

STORY = (
    "Sasha found a red kite in the park.\n\n"
    "The wind took the kite over the green hill.\n\n"
    "Sasha ran after it and laughed in the sun."
)
SMALL = {"width": 64, "height": 64, "steps": 3, "seed": 7}


def make_app(tmp_path, tiny_models, tiny_clip, **overrides):
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]), clip_model=str(tiny_clip), **overrides)
    return create_app(settings)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models, tiny_clip):
    with TestClient(make_app(tmp_path_factory.mktemp("books"), tiny_models, tiny_clip)) as c:
        yield c


def finish(client: TestClient, book_id: str, timeout: float = 120) -> dict:
    client.app.state.books.wait(book_id, timeout)
    return client.get(f"/v1/books/{book_id}").json()


def make_book(client: TestClient, **fields) -> dict:
    r = client.post("/v1/books", json={"story": STORY, "candidates": 2, **SMALL, **fields})
    assert r.status_code == 202, r.text
    return finish(client, r.json()["id"])


@pytest.fixture(scope="module")
def book(client) -> dict:
    return make_book(client)


def png(client: TestClient, url: str) -> bytes:
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return r.content


def test_book_pages_candidates_and_seeds(book):
    assert book["state"] == "done" and book["error"] is None
    assert book["page_count"] == 3 and book["pages_done"] == 3 and book["scoring"] == "clip"
    assert [p["text"] for p in book["pages"]] == STORY.split("\n\n")
    for p in book["pages"]:
        n = p["number"]
        assert [c["seed"] for c in p["candidates"]] == [7 + (n - 1) * 1000, 8 + (n - 1) * 1000]
        assert p["plan_source"] == "keywords" and p["prompt"]
        assert p["state"] == "done" and p["chosen"] in (0, 1)
        assert p["seed"] == p["candidates"][p["chosen"]]["seed"]


def test_ranking_matches_cosines_computed_by_hand(client, book, tiny_clip):
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    processor = CLIPProcessor.from_pretrained(str(tiny_clip))

    def image_vec(data: bytes) -> torch.Tensor:
        pixels = processor.image_processor([Image.open(io.BytesIO(data)).convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            v = model.get_image_features(pixel_values=pixels["pixel_values"])
        v = v if isinstance(v, torch.Tensor) else v.pooler_output
        return (v / v.norm(dim=-1, keepdim=True))[0]

    chosen_vecs = []
    for p in book["pages"]:
        tokens = processor.tokenizer([p["text"]], return_tensors="pt", truncation=True, max_length=77)
        with torch.no_grad():
            t = model.get_text_features(**tokens)
        t = t if isinstance(t, torch.Tensor) else t.pooler_output
        t = (t / t.norm(dim=-1, keepdim=True))[0]
        totals = []
        for c in p["candidates"]:
            v = image_vec(png(client, c["image"]))
            clip_t = float(v @ t)
            assert c["scores"]["clip_t"] == pytest.approx(clip_t, abs=1e-4)
            if chosen_vecs:  # no characters: every earlier chosen page is a reference
                clip_i = sum(float(v @ r) for r in chosen_vecs) / len(chosen_vecs)
                assert c["scores"]["clip_i"] == pytest.approx(clip_i, abs=1e-4)
                total = (clip_t + clip_i) / 2
            else:
                assert c["scores"]["clip_i"] is None
                total = clip_t
            assert c["scores"]["total"] == pytest.approx(total, abs=1e-4)
            totals.append(total)
        assert p["chosen"] == max(range(len(totals)), key=lambda i: (totals[i], -i))
        chosen_vecs.append(image_vec(png(client, p["image"])))


def test_scores_are_in_each_image_infotext(client, book):
    page = book["pages"][1]
    for c in page["candidates"]:
        params = parse_infotext(Image.open(io.BytesIO(png(client, c["image"]))).info["parameters"])
        assert float(params["CLIP-T"]) == pytest.approx(c["scores"]["clip_t"], abs=1e-4)
        assert float(params["CLIP-I"]) == pytest.approx(c["scores"]["clip_i"], abs=1e-4)
        assert float(params["Score"]) == pytest.approx(c["scores"]["total"], abs=1e-4)
        assert int(params["Seed"]) == c["seed"]


def test_weights_change_the_total(client):
    text_only = make_book(client, clip_i_weight=0.0)
    for p in text_only["pages"]:
        for c in p["candidates"]:
            assert c["scores"]["total"] == pytest.approx(c["scores"]["clip_t"], abs=1e-6)


def test_pdf_has_a_page_per_book_page_with_the_chosen_images(client, book):
    r = client.get(f"/v1/books/{book['id']}/export.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(r.content))
    assert len(reader.pages) == 1 + book["page_count"]  # a title page, then one per book page
    for pdf_page, page in zip(reader.pages[1:], book["pages"], strict=True):
        assert len(pdf_page.images) == 1
        want = Image.open(io.BytesIO(png(client, page["image"]))).convert("RGB")
        got = pdf_page.images[0].image.convert("RGB")
        assert got.size == want.size and list(got.getdata()) == list(want.getdata())
        assert page["text"].split()[0] in pdf_page.extract_text()
    assert "CLIP-T" not in "".join(p.extract_text() for p in reader.pages)
    scored = PdfReader(io.BytesIO(client.get(f"/v1/books/{book['id']}/export.pdf?scores=true").content))
    assert "CLIP-T" in scored.pages[1].extract_text()


def test_html_export(client, book):
    r = client.get(f"/v1/books/{book['id']}/export.html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text.count('<section class="page"') == 3 and "Sasha found a red kite" in r.text


def test_book_progress_over_the_job_api(client, book):
    job = client.get(f"/v1/jobs/{book['id']}").json()
    assert job["state"] == "done" and job["progress"]["fraction"] == 1.0
    assert job["result"]["object"] == "book" and job["result"]["id"] == book["id"]
    assert book["id"] in [j["id"] for j in client.get("/v1/jobs?limit=100").json()["data"]]
    with client.stream("GET", f"/v1/jobs/{book['id']}/events") as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    chosen = [e["page"] for e in events if e.get("page") and "chosen" in e]
    assert chosen == [1, 2, 3]


def test_regenerate_one_page_keeps_the_others(client):
    before = make_book(client)
    keep = {p["number"]: [c["seed"] for c in p["candidates"]] for p in before["pages"]}
    r = client.post(f"/v1/books/{before['id']}/pages/2/regenerate", json={"seed": 500, "prompt": "a kite, blue sky"})
    assert r.status_code == 202
    after = finish(client, before["id"])
    assert after["state"] == "done"
    assert [c["seed"] for c in after["pages"][1]["candidates"]] == [500, 501]
    assert after["pages"][1]["prompt"] == "a kite, blue sky" and after["pages"][1]["plan_source"] == "edited"
    for n in (1, 3):
        assert [c["seed"] for c in after["pages"][n - 1]["candidates"]] == keep[n]
        assert after["pages"][n - 1]["candidates"] == before["pages"][n - 1]["candidates"]


def test_resume_after_a_restart_keeps_finished_pages(tmp_path, tiny_models, tiny_clip, monkeypatch):
    """The server stops while page 2 is being chosen; the next start finishes the book from there."""
    reached = threading.Event()
    original = book_run.BookRun._choose

    def stop_at_page_2(self, page):
        if page["number"] == 2:
            reached.set()
            self.ctx.stop.wait(30)  # the server is stopping now
            raise book_run.Stopping("the server is stopping")
        return original(self, page)

    monkeypatch.setattr(book_run.BookRun, "_choose", stop_at_page_2)
    with TestClient(make_app(tmp_path, tiny_models, tiny_clip)) as c:
        book_id = c.post("/v1/books", json={"story": STORY, "candidates": 2, **SMALL}).json()["id"]
        assert reached.wait(60)
    # the lifespan ended: the book stays "running" with page 1 chosen and page 2's candidates saved
    monkeypatch.setattr(book_run.BookRun, "_choose", original)
    with TestClient(make_app(tmp_path, tiny_models, tiny_clip)) as c:
        middle = c.app.state.books.store.get(book_id)
        pages = middle["document"]["pages"]
        assert middle["state"] == "running"
        assert pages[0]["chosen"] is not None and len(pages[1]["candidates"]) == 2 and pages[1]["chosen"] is None
        done = finish(c, book_id)
    assert done["state"] == "done" and done["pages_done"] == 3
    assert done["pages"][0]["candidates"][0]["image"].endswith("/pages/1/candidates/0")
    got = {p["number"]: [(c["seed"], c["scores"]) for c in p["candidates"]] for p in done["pages"]}
    assert got[1] == [(c["seed"], c["scores"]) for c in pages[0]["candidates"]]
    assert got[2] == [(c["seed"], c["scores"]) for c in pages[1]["candidates"]]  # not generated again
    assert [s for s, _ in got[3]] == [2007, 2008]


def test_errors(client, book):
    def post(body):
        return client.post("/v1/books", json=body)

    r = post({"story": STORY, "keywords": "a fox"})
    assert r.status_code == 422 and "either story" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "story"
    r = post({"keywords": "a fox in the snow"})
    assert r.status_code == 422 and "--llm-base-url" in r.json()["error"]["message"]
    r = post({"story": STORY, "characters": ["nobody"]})
    assert r.status_code == 422 and "nobody" in r.json()["error"]["message"]
    r = post({"story": STORY, "candidates": 9})
    assert r.status_code == 422 and r.json()["error"]["param"] == "candidates"
    r = post({"story": STORY, "sampler": "Nope"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "sampler" and "'Nope'" in r.json()["error"]["message"]
    r = post({"story": STORY, "model": "no-such-model"})
    assert r.status_code == 404 and "no-such-model" in r.json()["error"]["message"]
    r = post({"story": STORY, "colour": "red"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "colour"
    assert client.get("/v1/books/nope").status_code == 404
    r = client.post(f"/v1/books/{book['id']}/pages/9/regenerate", json={})
    assert r.status_code == 422 and "3 pages" in r.json()["error"]["message"]
    assert client.get(f"/v1/books/{book['id']}/export.docx").status_code == 422
    assert client.post(f"/v1/books/{book['id']}/resume").status_code == 409


def test_other_keys_do_not_see_a_book(tmp_path, tiny_models, tiny_clip):
    app = make_app(tmp_path, tiny_models, tiny_clip)
    with TestClient(app) as c:
        a = app.state.keys.create("a")[1]
        b = app.state.keys.create("b")[1]
        mine = {"Authorization": f"Bearer {a}"}
        r = c.post("/v1/books", json={"story": STORY, "candidates": 1, **SMALL}, headers=mine)
        book_id = r.json()["id"]
        finish(c, book_id)
        other = {"Authorization": f"Bearer {b}"}
        assert c.get(f"/v1/books/{book_id}", headers=other).status_code == 404
        assert c.get(f"/v1/jobs/{book_id}", headers=other).status_code == 404
        assert c.get(f"/v1/books/{book_id}/export.pdf", headers=other).status_code == 404
        assert c.get("/v1/books", headers=other).json()["data"] == []
        assert c.get(f"/v1/books/{book_id}", headers=mine).status_code == 200


def test_threshold_keeps_generating_up_to_the_maximum(client):
    never = make_book(client, candidates=1, threshold=1.0, max_candidates=3)  # a cosine never reaches 1
    assert [len(p["candidates"]) for p in never["pages"]] == [3, 3, 3]
    assert [c["seed"] for c in never["pages"][0]["candidates"]] == [7, 8, 9]
    easy = make_book(client, candidates=1, threshold=-1.0, max_candidates=3)  # the first one is good enough
    assert [len(p["candidates"]) for p in easy["pages"]] == [1, 1, 1]
    r = client.post("/v1/books", json={"story": STORY, "candidates": 3, "max_candidates": 2})
    assert r.status_code == 422 and r.json()["error"]["param"] == "max_candidates"
    assert r.json()["error"]["message"] == "max_candidates must be at least candidates (3)"


def test_cancel_over_the_job_api_then_resume(client):
    r = client.post("/v1/books", json={"story": STORY, "candidates": 2, **SMALL, "steps": 40})
    book_id = r.json()["id"]
    assert client.delete(f"/v1/jobs/{book_id}").status_code in (200, 202)
    cancelled = finish(client, book_id)
    assert cancelled["state"] == "cancelled" and cancelled["pages_done"] < 3
    assert client.get(f"/v1/jobs/{book_id}").json()["state"] == "cancelled"
    r = client.get(f"/v1/books/{book_id}/export.pdf")
    assert r.status_code == 409 and "not finished" in r.json()["error"]["message"]
    assert client.post(f"/v1/books/{book_id}/resume").status_code == 202
    done = finish(client, book_id)
    assert done["state"] == "done" and done["pages_done"] == 3
