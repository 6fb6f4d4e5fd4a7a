"""`/v1/characters` over HTTP, and `<be-char:NAME>` in every dialect: the same pixels as the prompt spelled out."""

from __future__ import annotations

import base64
import io
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.api.openai.schemas import revised_prompt
from pictale.core.config import Settings
from tests.api.conftest import decode, info_of

SASHA = {
    "name": "sasha",
    "description": "a girl with red hair",
    "avatars": "<be-lora:toy:0.8>",
    "negative_prompt": "blurry, lowres",
}
ASKED = "<be-char:sasha> playing tennis"
HAND = "a girl with red hair, <be-lora:toy:0.8> playing tennis"  # what ASKED expands to
NO_LORA = "a girl with red hair, playing tennis"
NEGATIVE = "blurry, lowres"
A1111 = {"steps": 2, "width": 64, "height": 64, "seed": 21}
OPENAI = {"size": "64x64", "steps": 2, "seed": 21, "response_format": "b64_json"}
JOB = {"steps": 2, "width": 64, "height": 64, "seed": 21, "response_format": "b64_json"}


def error(message: str, param: str | None, code: str | None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    settings = Settings(data_dir=tmp_path_factory.mktemp("characters"), model=str(tiny_models["sd15"]))
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/v1/avatars",
            data={"kind": "lora", "name": "toy"},
            files=[("files", ("toy.safetensors", tiny_models["lora_peft"].read_bytes(), "application/octet-stream"))],
        )
        assert r.status_code == 201, r.text
        r = c.post("/v1/characters", json=SASHA)
        assert r.status_code == 201, r.text
        yield c


def rgb(img: Image.Image) -> bytes:
    return img.convert("RGB").tobytes()


def txt2img(client, prompt, **kw):
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "prompt": prompt, **kw})
    assert r.status_code == 200, r.text
    return r


def a1111_pixels(client, prompt, **kw) -> bytes:
    return rgb(decode(txt2img(client, prompt, **kw).json()["images"][0]))


def openai_image(client, prompt, **kw) -> Image.Image:
    r = client.post("/v1/images/generations", json={**OPENAI, "prompt": prompt, **kw})
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))


def job_image(client, prompt, **kw) -> dict:
    r = client.post("/v1/jobs", json={**JOB, "prompt": prompt, **kw})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.time() + 120
    while time.time() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("done", "failed", "cancelled"):
            assert body["state"] == "done", body
            return body["result"]["images"][0]
        time.sleep(0.02)
    raise AssertionError("the job did not finish")


# -- REST ------------------------------------------------------------------------------------------------
def test_create_returns_the_character_object(client):
    before = int(time.time())
    body = {"name": "Tom", "description": "a tall boy", "avatars": "", "negative_prompt": "", "seed": 1234}
    r = client.post("/v1/characters", json=body)
    assert r.status_code == 201, r.text
    tom = r.json()
    assert before <= tom["created"] == tom["updated"] <= int(time.time())
    assert tom == {
        "object": "character",
        "name": "Tom",
        "description": "a tall boy",
        "avatars": "",
        "negative_prompt": "",
        "seed_policy": "fixed",
        "seed": 1234,
        "created": tom["created"],
        "updated": tom["updated"],
    }
    assert client.get("/v1/characters/tom").json() == tom  # case-insensitive
    names = [c["name"] for c in client.get("/v1/characters").json()["data"]]
    assert names == ["sasha", "Tom"]
    listing = client.get("/v1/characters").json()
    assert listing["object"] == "list" and listing["data"][1] == tom


def test_patch_changes_only_what_is_sent_and_delete(client):
    r = client.post("/v1/characters", json={"name": "ann", "description": "a woman", "negative_prompt": "ugly"})
    assert r.status_code == 201
    r = client.patch("/v1/characters/ANN", json={"description": "an old woman"})
    assert r.status_code == 200, r.text
    ann = r.json()
    assert (ann["description"], ann["negative_prompt"], ann["seed_policy"], ann["seed"]) == (
        "an old woman",
        "ugly",
        "random",
        None,
    )
    assert ann["updated"] >= ann["created"]
    r = client.patch("/v1/characters/ann", json={"seed": 5, "name": "anna"})
    assert (r.json()["name"], r.json()["seed_policy"], r.json()["seed"]) == ("anna", "fixed", 5)
    r = client.delete("/v1/characters/anna")
    assert r.status_code == 200 and r.json() == {"object": "character", "name": "anna", "deleted": True}
    r = client.get("/v1/characters/anna")
    assert r.status_code == 404
    assert r.json() == error("no character named 'anna'", None, "character_not_found")
    assert client.delete("/v1/characters/anna").status_code == 404
    assert client.patch("/v1/characters/anna", json={"description": "x"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            {"name": "zed", "negative": "x"},
            422,
            error("negative: Extra inputs are not permitted", "negative", "invalid_value"),
        ),
        ({"description": "x"}, 422, error("name: Field required", "name", "invalid_value")),
        (
            {"name": "zed", "seed": "soon"},
            422,
            error(
                "seed: Input should be a valid integer, unable to parse string as an integer", "seed", "invalid_value"
            ),
        ),
        (
            {"name": "red hair"},
            422,
            error(
                "character name 'red hair' is not allowed: use 1-64 characters from letters, digits, '_', '.' and '-'",
                "name",
                "invalid_request",
            ),
        ),
        (
            {"name": "zed", "description": "d" * 4001},
            422,
            error("description is 4001 characters long; the limit is 4000", "description", "invalid_request"),
        ),
        (
            {"name": "zed", "avatars": "<be-lora:toy:abc>"},
            422,
            error(
                "avatars: malformed avatar token '<be-lora:toy:abc>': weight 'abc' is not a number",
                "avatars",
                "invalid_request",
            ),
        ),
        (
            {"name": "zed", "avatars": "red hair <be-lora:toy>"},
            422,
            error(
                "avatars may only contain avatar tokens such as <be-face:lucy:0.4> <be-lora:toy:0.8>, not 'red hair'; "
                "put words in the description",
                "avatars",
                "invalid_request",
            ),
        ),
        (
            {"name": "zed", "seed_policy": "fixed"},
            422,
            error("seed_policy 'fixed' needs a seed (0 to 4294967295)", "seed", "invalid_request"),
        ),
        (
            {"name": "zed", "seed": 4294967296},
            422,
            error(
                "seed must be a whole number from -1 (random) to 4294967295 (got 4294967296)", "seed", "invalid_request"
            ),
        ),
        ({"name": "SASHA"}, 409, error("you already have a character named 'sasha'", "name", "avatar_exists")),
    ],
)
def test_create_errors_name_the_field(client, body, status, expected):
    r = client.post("/v1/characters", json=body)
    assert r.status_code == status, r.text
    assert r.json() == expected
    assert "zed" not in [c["name"] for c in client.get("/v1/characters").json()["data"]]


def test_patch_errors_name_the_field(client):
    r = client.patch("/v1/characters/sasha", json={"avatar": "<be-lora:toy>"})
    assert r.status_code == 422 and r.json() == error(
        "avatar: Extra inputs are not permitted", "avatar", "invalid_value"
    )
    r = client.patch("/v1/characters/sasha", json={"seed_policy": "fixed"})
    assert r.status_code == 422
    assert r.json() == error("seed_policy 'fixed' needs a seed (0 to 4294967295)", "seed", "invalid_request")
    assert client.get("/v1/characters/sasha").json()["seed_policy"] == "random"


# -- <be-char:...> in prompts --------------------------------------------------------------------------------
def test_a1111_character_equals_the_prompt_spelled_out(client):
    r = txt2img(client, ASKED)
    by_hand = a1111_pixels(client, HAND, negative_prompt=NEGATIVE)
    assert rgb(decode(r.json()["images"][0])) == by_hand
    # the LoRA the character brings is applied: without it, another picture
    assert a1111_pixels(client, NO_LORA, negative_prompt=NEGATIVE) != by_hand
    # and its negative prompt is used: without it, another picture
    assert a1111_pixels(client, HAND) != by_hand
    info = info_of(r)
    assert info["prompt"] == ASKED and info["negative_prompt"] == ""
    assert info["extra_generation_params"]["Characters"] == "sasha"
    assert info["extra_generation_params"]["Avatars"] == "lora:toy:0.8"
    text = info["infotexts"][0]
    assert text.startswith(f"{ASKED}\nSteps: 2, ")
    assert "Characters: sasha, " in text and 'Avatars: "lora:toy:0.8"' in text


def test_a1111_negative_prompt_of_the_request_is_kept_first(client):
    r = txt2img(client, ASKED, negative_prompt="ugly, Blurry")
    assert rgb(decode(r.json()["images"][0])) == a1111_pixels(client, HAND, negative_prompt="ugly, Blurry, lowres")
    assert info_of(r)["infotexts"][0].startswith(f"{ASKED}\nNegative prompt: ugly, Blurry\nSteps: 2, ")


def test_openai_character_equals_the_prompt_spelled_out(client):
    img = openai_image(client, ASKED)
    assert rgb(img) == rgb(openai_image(client, HAND, negative_prompt=NEGATIVE))
    assert rgb(img) != rgb(openai_image(client, NO_LORA, negative_prompt=NEGATIVE))
    text = img.info["parameters"]
    assert text.startswith(f"{ASKED}\nSteps: 2, ") and "Characters: sasha" in text


def test_openai_revised_prompt_is_what_the_model_read(client):
    r = client.post("/v1/images/generations", json={**OPENAI, "prompt": ASKED})
    assert r.json()["data"][0]["revised_prompt"] == revised_prompt(HAND) == NO_LORA


def test_jobs_character_equals_the_prompt_spelled_out(client):
    image = job_image(client, ASKED)
    by_hand = job_image(client, HAND, negative_prompt=NEGATIVE)
    assert rgb(decode(image["b64_json"])) == rgb(decode(by_hand["b64_json"]))
    assert image["infotext"].startswith(f"{ASKED}\nSteps: 2, ") and "Characters: sasha" in image["infotext"]


def test_two_characters_and_the_characters_infotext(client):
    client.post("/v1/characters", json={"name": "ben", "description": "a small dog", "negative_prompt": "lowres, cat"})
    r = txt2img(client, "<be-char:sasha> and <be-char:ben> in a park")
    by_hand = a1111_pixels(
        client,
        "a girl with red hair, <be-lora:toy:0.8> and a small dog in a park",
        negative_prompt="blurry, lowres, cat",
    )
    assert rgb(decode(r.json()["images"][0])) == by_hand
    assert info_of(r)["extra_generation_params"]["Characters"] == "sasha, ben"
    assert 'Characters: "sasha, ben"' in info_of(r)["infotexts"][0]


def test_per_image_prompts_each_get_their_characters_negatives(client):
    client.post("/v1/characters", json={"name": "rex", "description": "a small dog", "negative_prompt": "cat"})
    both = {"batch_size": 2, "negative_prompt": "ugly"}
    r = txt2img(client, ["<be-char:rex> sits", "a red ball"], **both)
    by_hand = txt2img(client, ["a small dog sits", "a red ball"], **{**both, "negative_prompt": ["ugly, cat", "ugly"]})
    assert [rgb(decode(i)) for i in r.json()["images"]] == [rgb(decode(i)) for i in by_hand.json()["images"]]
    info = info_of(r)
    assert info["all_prompts"] == ["<be-char:rex> sits", "a red ball"]
    assert info["all_negative_prompts"] == ["ugly", "ugly"]
    assert info["extra_generation_params"]["Characters"] == "rex"


def test_hires_prompt_expands_characters_too(client):
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "denoising_strength": 0.6}
    # the hires prompt must call the prompt's avatars: sasha in both; its negative gains hers
    asked = {"hr_prompt": "<be-char:sasha> at night", "hr_negative_prompt": "ugly", **hires}
    r = txt2img(client, "<be-char:sasha> in a park", **asked)
    spelled_out = {
        "negative_prompt": NEGATIVE,
        "hr_prompt": "a girl with red hair, <be-lora:toy:0.8> at night",
        "hr_negative_prompt": "ugly, blurry, lowres",
        **hires,
    }
    by_hand = txt2img(client, "a girl with red hair, <be-lora:toy:0.8> in a park", **spelled_out)
    assert rgb(decode(r.json()["images"][0])) == rgb(decode(by_hand.json()["images"][0]))
    assert decode(r.json()["images"][0]).size == (96, 96)
    assert info_of(r)["extra_generation_params"]["Characters"] == "sasha"
    # a character only in the hires prompt: its negative goes to the hires pass alone
    r = txt2img(client, "a park", hr_prompt="<be-char:ben> in a park", **hires)
    by_hand = txt2img(client, "a park", hr_prompt="a small dog in a park", hr_negative_prompt="lowres, cat", **hires)
    assert rgb(decode(r.json()["images"][0])) == rgb(decode(by_hand.json()["images"][0]))
    assert info_of(r)["extra_generation_params"]["Characters"] == "ben"
    r = client.post("/sdapi/v1/txt2img", json={**A1111, **hires, "prompt": "a park", "hr_prompt": "<be-char:bne>"})
    assert r.status_code == 422
    assert r.json()["detail"] == "unknown character 'bne' in '<be-char:bne>'; did you mean 'ben'?"


def test_fixed_seed_policy_repeats_the_picture(client):
    client.post("/v1/characters", json={"name": "max", "description": "a boy in a blue cap", "seed": 777})
    first = txt2img(client, "<be-char:max> reading", seed=-1)
    second = txt2img(client, "<be-char:max> reading", seed=-1)
    assert rgb(decode(first.json()["images"][0])) == rgb(decode(second.json()["images"][0]))
    assert info_of(first)["seed"] == 777 and "Seed: 777," in info_of(first)["infotexts"][0]
    assert rgb(decode(first.json()["images"][0])) == a1111_pixels(client, "a boy in a blue cap reading", seed=777)
    # a seed the request gives wins over the character's
    assert info_of(txt2img(client, "<be-char:max> reading", seed=5))["seed"] == 5
    # a random-policy character leaves seed -1 random
    seeds = {info_of(txt2img(client, ASKED, seed=-1))["seed"] for _ in range(3)}
    assert len(seeds) > 1


def test_prompt_errors_in_each_dialect(client):
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "prompt": "<be-char:sahsa> runs"})
    assert r.status_code == 422
    assert r.json()["error"] == "unknown_avatar"
    assert r.json()["detail"] == "unknown character 'sahsa' in '<be-char:sahsa>'; did you mean 'sasha'?"
    r = client.post("/v1/images/generations", json={**OPENAI, "prompt": "<be-char:sasha:0.5> runs"})
    assert r.status_code == 400
    assert r.json() == error(
        "malformed character token '<be-char:sasha:0.5>': characters take no weight; write <be-char:name>",
        "prompt",
        "prompt_syntax",
    )
    r = client.post("/v1/jobs", json={**JOB, "prompt": "a park", "negative_prompt": "<be-char:sasha>"})
    assert r.status_code == 422
    assert r.json() == error(
        "'<be-char:sasha>' is in the negative prompt: characters only work in the prompt, not the negative prompt",
        "negative_prompt",
        "prompt_syntax",
    )


def test_a_deleted_avatar_is_the_usual_unknown_avatar_error(client):
    r = client.post("/v1/characters", json={"name": "ghost", "avatars": "<be-lora:gone:0.5>"})
    assert r.status_code == 201  # avatar names resolve at generation time
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "prompt": "<be-char:ghost> in a house"})
    assert r.status_code == 422
    assert r.json()["detail"] == "unknown lora avatar 'gone' in '<be-lora:gone:0.5>'; your lora avatars are 'toy'"


# Last in the module: once a key exists the server is no longer open, so keyless requests get 401.
def test_keys_never_see_each_others_characters(client):
    keys = client.app.state.keys
    _, alice = keys.create("alice", admin=True)
    _, bob = keys.create("bob")
    a, b = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
    r = client.post("/v1/characters", json={"name": "lily", "description": "a girl with a yellow hat"}, headers=a)
    assert r.status_code == 201
    assert client.get("/v1/characters", headers=b).json() == {"object": "list", "data": []}
    assert [c["name"] for c in client.get("/v1/characters", headers=a).json()["data"]] == ["lily"]
    for method in ("get", "delete"):
        r = getattr(client, method)("/v1/characters/lily", headers=b)
        assert r.status_code == 404 and r.json() == error("no character named 'lily'", None, "character_not_found")
    r = client.patch("/v1/characters/lily", json={"description": "mine now"}, headers=b)
    assert r.status_code == 404
    # the local user's sasha does not exist for alice either
    assert client.get("/v1/characters/sasha", headers=a).status_code == 404
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "prompt": "<be-char:lily> runs"}, headers=b)
    assert r.status_code == 422
    assert r.json()["detail"] == "unknown character 'lily' in '<be-char:lily>'; you have no characters"
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "prompt": "<be-char:lily> runs"}, headers=a)
    assert r.status_code == 200
    assert info_of(r)["extra_generation_params"]["Characters"] == "lily"
    # bob may have his own lily
    assert client.post("/v1/characters", json={"name": "lily"}, headers=b).status_code == 201
    assert client.get("/v1/characters/lily", headers=a).json()["description"] == "a girl with a yellow hat"
