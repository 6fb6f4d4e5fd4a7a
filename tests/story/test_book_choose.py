"""`POST /v1/books/{id}/pages/{n}/choose`: show another candidate of a page; stored, exported, reset by regenerate."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from tests.story.test_books_api import SMALL, make_app

STORY = "Sasha found a red kite in the park.\n\nThe wind took the kite over the green hill."


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("choose")


@pytest.fixture(scope="module")
def client(data_dir, tiny_models, tiny_clip):
    app = make_app(data_dir, tiny_models, tiny_clip)
    with TestClient(app) as c:
        c.mine = bearer(app.state.keys.create("a")[1])
        c.other = bearer(app.state.keys.create("b")[1])
        yield c


@pytest.fixture(scope="module")
def book(client) -> dict:
    r = client.post("/v1/books", json={"story": STORY, "candidates": 3, **SMALL}, headers=client.mine)
    assert r.status_code == 202, r.text
    client.app.state.books.wait(r.json()["id"], 120)
    done = client.get(f"/v1/books/{r.json()['id']}", headers=client.mine).json()
    assert done["state"] == "done"
    return done


def choose(client, book_id, number, body, headers=None):
    return client.post(f"/v1/books/{book_id}/pages/{number}/choose", json=body, headers=headers or client.mine)


def png(client, url) -> bytes:
    r = client.get(url, headers=client.mine)
    assert r.status_code == 200
    return r.content


def test_pages_say_they_were_chosen_by_score(book):
    assert all(p["chosen_by"] == "score" for p in book["pages"])


def test_choose_another_candidate_shows_and_exports_it(client, book):
    page = book["pages"][1]
    other = next(i for i in range(3) if i != page["chosen"])
    r = choose(client, book["id"], 2, {"candidate": other})
    assert r.status_code == 200, r.text
    after = r.json()
    assert after == client.get(f"/v1/books/{book['id']}", headers=client.mine).json()
    got = after["pages"][1]
    assert got["chosen"] == other and got["chosen_by"] == "user"
    assert got["seed"] == page["candidates"][other]["seed"] and got["scores"] == page["candidates"][other]["scores"]
    assert after["pages"][0] == book["pages"][0]  # the other page is as it was
    wanted = png(client, got["candidates"][other]["image"])
    assert png(client, got["image"]) == wanted
    html = client.get(f"/v1/books/{book['id']}/export.html", headers=client.mine).text
    assert base64.b64encode(wanted).decode() in html
    best = png(client, got["candidates"][page["chosen"]]["image"])
    assert base64.b64encode(best).decode() not in html
    pdf = client.get(f"/v1/books/{book['id']}/export.pdf", headers=client.mine)
    assert pdf.status_code == 200


def test_errors(client, book):
    r = choose(client, book["id"], 3, {"candidate": 0})
    assert r.status_code == 404 and r.json()["error"]["param"] == "page" and "page 3" in r.json()["error"]["message"]
    r = choose(client, book["id"], 0, {"candidate": 0})
    assert r.status_code == 404
    for bad in (3, -1):
        r = choose(client, book["id"], 1, {"candidate": bad})
        assert r.status_code == 422 and r.json()["error"]["param"] == "candidate"
        assert "0 to 2" in r.json()["error"]["message"]
    r = choose(client, book["id"], 1, {"candidate": "x"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "candidate"
    r = choose(client, book["id"], 1, {})
    assert r.status_code == 422 and r.json()["error"]["param"] == "candidate"
    assert choose(client, book["id"], 1, {"candidate": 0}, client.other).status_code == 404
    assert choose(client, "nope", 1, {"candidate": 0}).status_code == 404


def test_unfinished_page_is_409(client):
    r = client.post("/v1/books", json={"story": STORY, "candidates": 2, **SMALL, "steps": 60}, headers=client.mine)
    book_id = r.json()["id"]
    running = choose(client, book_id, 2, {"candidate": 0})
    assert running.status_code == 409  # being made (or finished page 2 not yet)
    client.delete(f"/v1/jobs/{book_id}", headers=client.mine)
    cancelled = finish_as(client, book_id)
    assert cancelled["state"] == "cancelled"
    page = next(p for p in cancelled["pages"] if p["chosen"] is None)
    r = choose(client, book_id, page["number"], {"candidate": 0})
    assert r.status_code == 409 and "not finished" in r.json()["error"]["message"]


def test_regenerate_chooses_by_score_again(client, book):
    page = book["pages"][0]
    other = next(i for i in range(3) if i != page["chosen"])
    assert choose(client, book["id"], 1, {"candidate": other}).json()["pages"][0]["chosen_by"] == "user"
    r = client.post(f"/v1/books/{book['id']}/pages/1/regenerate", json={"seed": 900}, headers=client.mine)
    assert r.status_code == 202
    again = finish_as(client, book["id"])
    assert again["pages"][0]["chosen_by"] == "score"
    assert [c["seed"] for c in again["pages"][0]["candidates"]] == [900, 901, 902]


def test_the_choice_survives_a_restart(client, book, data_dir, tiny_models, tiny_clip):
    page = client.get(f"/v1/books/{book['id']}", headers=client.mine).json()["pages"][1]
    other = next(i for i in range(3) if i != page["chosen"])
    chosen = choose(client, book["id"], 2, {"candidate": other}).json()["pages"][1]
    assert chosen["chosen"] == other and chosen["chosen_by"] == "user"
    with TestClient(make_app(data_dir, tiny_models, tiny_clip)) as again:  # the same database, a new process
        after = again.get(f"/v1/books/{book['id']}", headers=client.mine).json()["pages"][1]
    assert after["chosen"] == chosen["chosen"] and after["chosen_by"] == "user"


def finish_as(client, book_id: str) -> dict:
    client.app.state.books.wait(book_id, 120)
    return client.get(f"/v1/books/{book_id}", headers=client.mine).json()
