"""Books with an LLM (the fake OpenAI-compatible server): the story from keywords, page plans, characters."""

from __future__ import annotations

import io
import json

from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.storage.infotext import parse_infotext

STORY = "Sasha and Tom build a snowman.\n\nTom gives it his scarf.\n\nThe snowman smiles at the moon."


def reply(messages) -> str:
    system = messages[0]["content"].lower()
    page = messages[-1]["content"].split("This page:")[-1]
    if "json" in system:  # a page plan
        if "snowman smiles" in page:
            return json.dumps({"prompt": "a snowman under the moon, night", "characters": []})
        names = ["Sasha", "Tom", "Gandalf"] if "build" in page else ["tom"]
        return "```json\n" + json.dumps({"prompt": "snow, garden", "characters": names}) + "\n```"
    return STORY  # the story written from the keywords


def test_book_from_keywords_with_llm_plans_and_characters(tmp_path, tiny_models, tiny_clip, fake_llm):
    fake_llm.reply = reply
    settings = Settings(
        data_dir=tmp_path,
        model=str(tiny_models["sd15"]),
        clip_model=str(tiny_clip),
        llm_base_url=fake_llm.base_url,
        llm_model="fake-model",
    )
    with TestClient(create_app(settings)) as c:
        for name, desc in (("sasha", "a girl with red hair"), ("tom", "a boy in a blue hat")):
            assert c.post("/v1/characters", json={"name": name, "description": desc}).status_code == 201
        r = c.post(
            "/v1/books",
            json={
                "keywords": "snowman, winter, friends",
                "reading_level": "age 4-6",
                "length": 3,
                "characters": ["sasha", "tom"],
                "style": "watercolor",
                "candidates": 2,
                "width": 64,
                "height": 64,
                "steps": 2,
                "seed": 3,
            },
        )
        assert r.status_code == 202, r.text
        c.app.state.books.wait(r.json()["id"], 120)
        book = c.get(f"/v1/books/{r.json()['id']}").json()
        first = Image.open(io.BytesIO(c.get(book["pages"][0]["image"]).content))
    assert book["state"] == "done", book["error"]
    assert book["story"] == STORY and book["story_source"] == "llm"
    story_request = fake_llm.requests[0]["messages"]
    assert "snowman, winter, friends" in json.dumps(story_request) and "age 4-6" in json.dumps(story_request)
    p1, p2, p3 = book["pages"]
    assert p1["characters"] == ["sasha", "tom"]  # the unknown "Gandalf" is dropped
    assert p1["prompt"] == "watercolor, <be-char:sasha>, <be-char:tom>, snow, garden"
    assert p2["characters"] == ["tom"] and p2["plan_source"] == "llm"
    assert p3["prompt"] == "watercolor, a snowman under the moon, night" and p3["characters"] == []
    params = parse_infotext(first.info["parameters"])
    assert params["Characters"] == "sasha, tom" and "CLIP-T" in params
    # CLIP-I needs references: none for page 1 (no avatar images), page 1 for Tom's page 2, all for page 3
    assert "CLIP-I" not in params and p1["scores"]["clip_i"] is None
    assert p2["scores"]["clip_i"] is not None and p3["scores"]["clip_i"] is not None
    # the page plans saw the story so far: page 2's request carried page 1's text
    plan_requests = [r for r in fake_llm.requests if "json" in r["messages"][0]["content"].lower()]
    assert "Sasha and Tom build a snowman" in plan_requests[1]["messages"][-1]["content"]
