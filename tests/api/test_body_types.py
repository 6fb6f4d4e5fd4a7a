"""A JSON body is read as JSON whatever Content-Type came with it (`curl -d` sends a form type)."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import decode

FAST = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 3}


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", None, "application/json; charset=utf-8"]
)
def test_json_body_under_any_content_type(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps(FAST)
    a1111 = client.post("/sdapi/v1/txt2img", content=body, headers=headers)
    assert a1111.status_code == 200, a1111.text
    assert decode(a1111.json()["images"][0]).size == (64, 64)
    openai_body = json.dumps({"prompt": "a fox", "size": "64x64", "steps": 2, "seed": 3, "response_format": "b64_json"})
    openai = client.post("/v1/images/generations", content=openai_body, headers=headers)
    assert openai.status_code == 200, openai.text
    job = client.post("/v1/jobs", content=body, headers=headers)
    assert job.status_code == 202, job.text
    # the same pixels as the same request sent as application/json
    reference = client.post("/sdapi/v1/txt2img", json=FAST).json()["images"][0]
    assert a1111.json()["images"][0] == reference


def test_a_form_body_on_a_json_route_names_the_type(client):
    r = client.post("/v1/jobs", data={"prompt": "a fox"})
    assert r.status_code == 415
    assert r.json()["error"] == {
        "message": "body: send a JSON object with Content-Type: application/json "
        "(got application/x-www-form-urlencoded)",
        "type": "invalid_request_error",
        "param": "body",
        "code": "unsupported_media_type",
    }
    r = client.post("/sdapi/v1/txt2img", data={"prompt": "a fox"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


def test_an_empty_body_names_body(client):
    r = client.post("/v1/characters", content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "body: a JSON object is required (the request body is empty)"
    assert r.json()["error"]["param"] == "body"
