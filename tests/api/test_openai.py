"""The OpenAI images dialect over HTTP: generations, edits, models, errors, avatars, Block Entropy mode, streams."""

from __future__ import annotations

import base64
import io
import json
import os
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.jobs.queue import Job
from tests.avatars import files

BASE = {"prompt": "a photo of a cat", "size": "64x64", "steps": 3}
MAX_IMAGES = 8


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("openai")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    os.symlink(tiny_models["sdxl"], ckpts / "tiny-sdxl")  # a second checkpoint, for `model`
    settings = Settings(data_dir=data, model=str(tiny_models["sd15"]), max_batch_images=MAX_IMAGES)
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/v1/avatars",
            data={"kind": "lora", "name": "toy"},
            files=[("files", ("toy.safetensors", tiny_models["lora_peft"].read_bytes(), "application/octet-stream"))],
        )
        assert r.status_code == 201, r.text
        yield c


def generate(client, **fields):
    return client.post("/v1/images/generations", json={**BASE, **fields})


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def b64_image(item: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def images_of(response) -> list[Image.Image]:
    assert response.status_code == 200, response.text
    return [b64_image(item) for item in response.json()["data"]]


def rgb(img: Image.Image) -> bytes:
    return img.convert("RGB").tobytes()


def edit(client, images, *, field="image", mask=None, **fields):
    parts = [(field, (f"{i}.png", png(img), "image/png")) for i, img in enumerate(images)]
    if mask is not None:
        parts.append(("mask", ("mask.png", png(mask), "image/png")))
    form = {"prompt": "a photo of a cat", "steps": "3", "response_format": "b64_json", "seed": "3", **fields}
    return client.post("/v1/images/edits", data=form, files=parts)


def error(message: str, param: str | None, code: str | None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _init(size=(64, 64), color=(200, 30, 30)) -> Image.Image:
    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle((10, 10, 40, 50), fill=(20, 200, 90))
    return img


# -- generations -----------------------------------------------------------------------------------------
def test_url_response_is_an_absolute_link_to_a_png(client):
    r = generate(client, seed=1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"created", "data"} and abs(body["created"] - time.time()) < 120
    assert len(body["data"]) == 1 and set(body["data"][0]) == {"url"}
    url = body["data"][0]["url"]
    assert url.startswith("http://testserver/v1/files/") and url.endswith(".png")
    f = client.get(url)
    assert f.status_code == 200 and f.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(f.content))
    assert img.size == (64, 64)
    assert img.info["parameters"].startswith(
        "a photo of a cat\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1, Size: 64x64"
    )


def test_links_expire_and_unknown_tokens_are_404(client, monkeypatch):
    url = generate(client, steps=1).json()["data"][0]["url"]
    gone = error("no such file, or its link has expired", "token", "file_not_found")
    r = client.get("/v1/files/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png")
    assert r.status_code == 404 and r.json() == gone
    assert client.get(url).status_code == 200
    import pictale.service.files as store

    later = time.time() + 60 * 60 + 5  # file_ttl_minutes defaults to 60
    monkeypatch.setattr(store.time, "time", lambda: later)
    r = client.get(url)
    assert r.status_code == 404 and r.json() == gone


def test_b64_json_n_images_and_seeds(client):
    r = generate(client, n=2, seed=5, response_format="b64_json")
    images = images_of(r)
    assert [set(item) for item in r.json()["data"]] == [{"b64_json"}, {"b64_json"}]
    assert len(images) == 2 and rgb(images[0]) != rgb(images[1])
    assert "Seed: 5," in images[0].info["parameters"] and "Seed: 6," in images[1].info["parameters"]
    one = images_of(generate(client, seed=5, response_format="b64_json"))
    assert rgb(one[0]) == rgb(images_of(generate(client, seed=5, response_format="b64_json"))[0])


def test_extension_fields_reach_the_generation(client):
    r = generate(
        client,
        negprompt="blurry",
        seed=9,
        steps=2,
        guidance=4.5,
        sampler="Euler a",
        quality="hd",
        style="vivid",
        user="someone",
        background="opaque",
        response_format="b64_json",
    )
    text = images_of(r)[0].info["parameters"]
    assert text.startswith("a photo of a cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a")
    assert "CFG scale: 4.5, Seed: 9," in text
    r = generate(client, negative_prompt="dark", sampler="DPM++ 2M Karras", response_format="b64_json")
    text = images_of(r)[0].info["parameters"]
    assert "Negative prompt: dark\n" in text and "Sampler: DPM++ 2M, Schedule type: Karras" in text


def test_output_format(client):
    item = generate(client, steps=1, output_format="jpeg", response_format="b64_json").json()["data"][0]
    assert base64.b64decode(item["b64_json"])[:3] == b"\xff\xd8\xff"
    url = generate(client, steps=1, output_format="webp").json()["data"][0]["url"]
    assert url.endswith(".webp") and client.get(url).headers["content-type"] == "image/webp"


def test_models_list_and_model_per_request(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == ["tiny-sd15", "tiny-sdxl"]
    for m in body["data"]:
        # OpenAI's fields, then pictale's: family, FLUX.1 variant and licence, the model's defaults (profile)
        assert set(m) == {"id", "object", "created", "owned_by", "family", "variant", "license", "profile"}
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] == "pictale"
        assert (m["family"], m["variant"], m["license"]) == (m["id"].removeprefix("tiny-"), None, None)
        assert m["profile"]["kind"] == "standard" and m["profile"]["steps"] == 20
    assert client.get("/v1/models/tiny-sd15").json()["id"] == "tiny-sd15"
    r = client.get("/v1/models/dall-e-3")
    assert r.status_code == 404
    assert r.json() == error("The model 'dall-e-3' does not exist", "model", "model_not_found")

    xl = images_of(generate(client, steps=1, model="tiny-sdxl", response_format="b64_json"))[0]
    assert "Model: tiny-sdxl," in xl.info["parameters"]
    for name in ("dall-e-2", "dall-e-3", ""):
        text = images_of(generate(client, steps=1, model=name, response_format="b64_json"))[0].info["parameters"]
        assert "Model: tiny-sd15," in text  # the override lasted one request; unknown names: the loaded model
    # the GPT image models answer base64 when no response_format is given, as OpenAI's do
    r = generate(client, steps=1, model="gpt-image-1")
    assert set(r.json()["data"][0]) == {"b64_json"}


# -- edits -----------------------------------------------------------------------------------------------
def test_edit_one_image(client):
    init = _init(size=(64, 48))
    r = edit(client, [init], response_format="url")
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    out = Image.open(io.BytesIO(client.get(url).content))
    assert out.size == (80, 64)  # no size: the image's own, its short side scaled up to the minimum of 64
    assert "Denoising strength: 0.75," in out.info["parameters"]
    assert "Mask blur" not in out.info["parameters"]  # no mask, no transparency: img2img


@pytest.mark.parametrize("field", ["image[]", "image", "images"])
def test_edit_several_images_each_edited_n_times(client, field):
    a, b = _init(), _init(color=(0, 0, 200))
    r = edit(client, [a, b], field=field, n="2", strength="0")
    outs = images_of(r)
    # output i is an edit of image i mod 2; strength 0 gives each image back as it was
    assert [rgb(o) for o in outs] == [rgb(a), rgb(b), rgb(a), rgb(b)]
    r = edit(client, [a, b], field=field, n="2", strength="0.6")
    assert len(images_of(r)) == 4


def test_edit_mask_transparent_area_is_repainted_the_rest_kept(client):
    init = _init()
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=(0, 0, 0, 0))  # edit the left half
    out = images_of(edit(client, [init], mask=mask))[0]
    left, right = (0, 0, 32, 64), (32, 0, 64, 64)
    assert rgb(out.crop(right)) == rgb(init.crop(right))  # opaque in the mask: exactly as sent
    assert rgb(out.crop(left)) != rgb(init.crop(left))
    text = out.info["parameters"]
    assert "Denoising strength: 1.0," in text and "Mask blur: 0," in text
    # a grey mask without alpha, as A1111 clients draw them: white = edit; same result
    grey = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(grey).rectangle((0, 0, 31, 63), fill=255)
    assert rgb(images_of(edit(client, [init], mask=grey))[0]) == rgb(out)
    # a softer seam on request; far from the edge nothing changes
    soft = images_of(edit(client, [init], mask=mask, mask_blur="4"))[0]
    far = (48, 0, 64, 64)
    assert "Mask blur: 4," in soft.info["parameters"] and rgb(soft.crop(far)) == rgb(init.crop(far))


def test_edit_several_images_with_a_mask_keeps_each_ones_pixels(client):
    a, b = _init(), _init(color=(0, 0, 200))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=(0, 0, 0, 0))
    outs = images_of(edit(client, [a, b], field="image[]", mask=mask, n="2", seed="40"))
    assert len(outs) == 4
    right = (32, 0, 64, 64)
    for i, out in enumerate(outs):  # output i edits image i mod 2
        assert rgb(out.crop(right)) == rgb((a, b)[i % 2].crop(right))
    assert [f"Seed: {s}," in o.info["parameters"] for s, o in zip((40, 42, 41, 43), outs, strict=True)] == [True] * 4


def test_edit_without_mask_uses_the_image_transparency(client):
    image = _init().convert("RGBA")
    ImageDraw.Draw(image).rectangle((0, 0, 31, 63), fill=(0, 0, 0, 0))
    out = images_of(edit(client, [image]))[0]
    right = (32, 0, 64, 64)
    assert rgb(out.crop(right)) == rgb(image.crop(right))
    assert "Mask blur: 0," in out.info["parameters"]


def test_edit_json_body(client):
    body = {**BASE, "image": base64.b64encode(png(_init())).decode(), "strength": 0, "response_format": "b64_json"}
    assert rgb(images_of(client.post("/v1/images/edits", json=body))[0]) == rgb(_init())


# -- errors: OpenAI's envelope, status 400 ------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"prompt": None}, error("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")),
        (
            {"size": "big"},
            error(
                "Invalid 'size': 'big'. Expected 'auto' or 'WIDTHxHEIGHT', e.g. '512x512' or '1024x1536'.",
                "size",
                "invalid_value",
            ),
        ),
        (
            {"size": "4096x4096"},
            error(
                "Invalid 'size': 4096x4096 is above the maximum of 2048x2048 (set --max-width/--max-height).",
                "size",
                "invalid_value",
            ),
        ),
        (
            {"n": 9},
            error(
                "Invalid 'n': integer above maximum value. Expected a value <= 8, but got 9 instead (this server "
                "makes at most 8 images per request).",
                "n",
                "integer_above_max_value",
            ),
        ),
        (
            {"n": "two"},
            error("n: Input should be a valid integer, unable to parse string as an integer", "n", "invalid_value"),
        ),
        (
            {"response_format": "png"},
            error(
                "Invalid value: 'png'. Supported values are: 'url' and 'b64_json'.", "response_format", "invalid_value"
            ),
        ),
        ({"steps": 0}, error("steps must be from 1 to 150 (got 0)", "steps", "invalid_request")),
    ],
)
def test_generation_errors(client, fields, expected):
    r = client.post("/v1/images/generations", json={k: v for k, v in {**BASE, **fields}.items() if v is not None})
    assert r.status_code == 400
    assert r.json() == expected


def test_body_that_is_not_a_json_object(client):
    r = client.post("/v1/images/generations", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("We could not parse the JSON body of your request (Expecting")
    r = client.post("/v1/images/generations", json=["a cat"])
    assert r.status_code == 400
    assert r.json() == error(
        'The request body must be a JSON object, e.g. {"prompt": "a cat"}.', None, "invalid_request"
    )


def test_edit_errors(client):
    r = client.post("/v1/images/edits", data={"steps": "3"}, files=[("image", ("a.png", png(_init()), "image/png"))])
    assert r.status_code == 400
    assert r.json() == error("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    r = client.post(
        "/v1/images/edits", data={"prompt": "x"}, files=[("image", ("a.png", b"not an image", "image/png"))]
    )
    assert r.status_code == 400
    assert r.json() == error(
        "image: not a decodable image (damaged, or not PNG, JPEG, WEBP, GIF or BMP)", "image", "invalid_image"
    )
    r = client.post("/v1/images/edits", data={"prompt": "x"})
    assert r.status_code == 400
    assert r.json() == error("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    r = edit(client, [_init()], mask=Image.new("RGBA", (32, 32)))
    assert r.status_code == 400
    assert r.json() == error(
        "Invalid 'mask': the mask is 32x32 but the image is 64x64; they must have the same dimensions.",
        "mask",
        "invalid_image",
    )
    r = edit(client, [_init()] * 3, n="3")
    assert r.status_code == 400 and r.json()["error"]["code"] == "integer_above_max_value"
    r = edit(client, [_init()], strength="lots")
    assert r.status_code == 400 and r.json()["error"]["param"] == "strength"


# -- avatars -----------------------------------------------------------------------------------------------
def test_avatar_tokens_in_prompts(client):
    r = generate(client, prompt="<be-lora:toy:0.8> a photo of a cat", seed=4, response_format="b64_json")
    item = r.json()["data"][0]
    assert item["revised_prompt"] == "a photo of a cat"
    text = b64_image(item).info["parameters"]
    assert text.startswith("<be-lora:toy:0.8> a photo of a cat\n") and "lora:toy:0.8" in text
    plain = images_of(generate(client, seed=4, response_format="b64_json"))[0]
    assert rgb(b64_image(item)) != rgb(plain)
    r = edit(client, [_init()], prompt="<be-lora:toy:0.8> a cat")
    assert r.status_code == 200 and r.json()["data"][0]["revised_prompt"] == "a cat"
    for response in (
        generate(client, prompt="<be-lora:tyo:0.8> a cat"),
        edit(client, [_init()], prompt="<be-lora:tyo:0.8> a cat"),
    ):
        assert response.status_code == 400
        assert response.json() == error(
            "unknown lora avatar 'tyo' in '<be-lora:tyo:0.8>'; did you mean 'toy'?", "prompt", "unknown_avatar"
        )


# -- Block Entropy mode ------------------------------------------------------------------------------------
def test_block_entropy_model_id_makes_n_the_seed(client):
    fields = {"model": "be-stable-diffusion-xl-base-1.0", "quality": "smooth", "style": "0.6", "user": "face:0.9"}
    r = generate(client, n=12, negprompt="ugly", response_format="b64_json", **fields)
    images = images_of(r)
    assert len(images) == 1
    text = images[0].info["parameters"]
    assert "Negative prompt: ugly\n" in text and "Seed: 12," in text and "Model: tiny-sd15," in text
    # without the alias, n is a count again
    assert len(images_of(generate(client, n=2, steps=1, response_format="b64_json"))) == 2


def test_serve_has_a_compat_switch():
    from typer.testing import CliRunner

    from pictale.cli.main import app

    r = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--compat" in r.output


# -- streaming ---------------------------------------------------------------------------------------------
def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture
def fake_previews(monkeypatch):
    """Previews as the worker sends them when `job.meta["previews"]` is set before it starts."""
    original = Job.report
    dot = base64.b64encode(png(Image.new("RGB", (8, 8), (9, 9, 9)))).decode()

    def report(self, step, total, batch_no=0, batch_count=1, *, preview=None):
        if preview is None and self.meta.get("previews"):
            preview = dot
        original(self, step, total, batch_no, batch_count, preview=preview)

    monkeypatch.setattr(Job, "report", report)


def test_stream_sends_partial_images_then_the_image(client, fake_previews):
    r = generate(client, steps=6, seed=2, stream=True, partial_images=2, quality="high")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [d["partial_image_index"] for _, d in events[:2]] == [0, 1]
    for name, data in events:
        assert data["type"] == name and data["size"] == "64x64" and data["output_format"] == "png"
        assert data["quality"] == "high" and data["background"] == "auto"
    final = b64_image(events[-1][1])
    assert final.size == (64, 64) and "Seed: 2," in final.info["parameters"]
    assert events[-1][1]["usage"]["total_tokens"] == 0
    # no partial images asked: no previews requested, only the image
    events = sse_events(generate(client, steps=2, stream=True).text)
    assert [e for e, _ in events] == ["image_generation.completed"]


def test_stream_edit_and_n(client, fake_previews):
    r = edit(client, [_init()], stream="true", partial_images="1", n="2")
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["image_edit.partial_image"] + ["image_edit.completed"] * 2


def test_stream_with_the_real_worker_ends_with_the_image(client):
    events = sse_events(generate(client, steps=4, stream=True, partial_images=2).text)
    assert events[-1][0] == "image_generation.completed"
    assert all(e == "image_generation.partial_image" for e, _ in events[:-1]) and len(events) <= 3


def test_stream_request_errors_are_plain_400s(client):
    r = generate(client, stream=True, size="nope")
    assert r.status_code == 400 and r.json()["error"]["param"] == "size"


# Last in the module: once a key exists the server is no longer open, so keyless requests get 401.
def test_bearer_keys_and_owners(client):
    _, alice = client.app.state.keys.create("alice", admin=True)
    _, bob = client.app.state.keys.create("bob")
    r = generate(client)
    assert r.status_code == 401
    assert r.json() == error("Not authenticated", None, "not_authenticated", "authentication_error")
    alice_h, bob_h = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
    up = client.post(
        "/v1/avatars",
        data={"kind": "face", "name": "lucy"},
        files=[("files", ("a.png", files.png(seed=1), "image/png"))],
        headers=alice_h,
    )
    assert up.status_code == 201, up.text
    body = {**BASE, "prompt": "<be-lora:toy:0.5> a cat", "response_format": "b64_json"}
    r = client.post("/v1/images/generations", json=body, headers=bob_h)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "unknown lora avatar 'toy' in '<be-lora:toy:0.5>'; you have no lora avatars"
    assert client.get("/v1/models", headers=bob_h).status_code == 200
    url = client.post("/v1/images/generations", json=BASE, headers=bob_h).json()["data"][0]["url"]
    assert client.get(url).status_code == 200  # the link itself is the credential (an <img src> works)
