"""A live `pictale serve` on 127.0.0.1 driven by the official `openai` package, as users run it."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image, ImageDraw

from tests.e2e.live import iter_server

FAST = {"steps": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # previews every step, so a streamed run has previews to send as partial images
    env = {"PICTALE_PREVIEW_EVERY": "1", "PICTALE_MAX_BATCH_IMAGES": "6"}
    yield from iter_server(tmp_path_factory.mktemp("openai-live"), "tiny", env=env, ready="/v1/models")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key="anything", max_retries=0, timeout=60)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _init(color=(200, 30, 30)) -> Image.Image:
    img = Image.new("RGB", (64, 64), color)
    ImageDraw.Draw(img).rectangle((10, 10, 40, 50), fill=(20, 200, 90))
    return img


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["pictale-demo (tiny random weights: draws noise)"]  # the demo says what it is
    assert client.models.retrieve(ids[0]).owned_by == "pictale"


def test_generate_url_and_b64_json(client):
    result = client.images.generate(prompt="a photo of a cat", model="dall-e-3", size="64x64", extra_body=FAST)
    assert len(result.data) == 1 and result.data[0].b64_json is None
    url = result.data[0].url
    assert url.startswith("http://127.0.0.1:") and "/v1/files/" in url
    fetched = httpx.get(url, headers={"Authorization": "Bearer anything"})  # Open WebUI sends its key
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)

    result = client.images.generate(
        prompt="a photo of a cat",
        n=2,
        size="64x64",
        response_format="b64_json",
        quality="standard",
        style="vivid",
        user="someone",
        extra_body={**FAST, "seed": 7, "negative_prompt": "blurry", "sampler": "DPM++ 2M Karras", "guidance": 5},
    )
    images = [decoded(d.b64_json) for d in result.data]
    assert [im.size for im in images] == [(64, 64), (64, 64)] and result.data[0].url is None
    text = images[0].info["parameters"]
    assert "Negative prompt: blurry\n" in text and "Sampler: DPM++ 2M, Schedule type: Karras" in text
    assert "CFG scale: 5.0, Seed: 7," in text and "Seed: 8," in images[1].info["parameters"]


def test_edit_one_image(client):
    result = client.images.edit(
        image=("cat.png", png(_init()), "image/png"),
        prompt="a cat",
        response_format="b64_json",
        extra_body={**FAST, "strength": 0.5},
    )
    out = decoded(result.data[0].b64_json)
    assert out.size == (64, 64) and "Denoising strength: 0.5," in out.info["parameters"]


def test_edit_several_images_with_a_mask(client):
    a, b = _init(), _init((0, 0, 200))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=(0, 0, 0, 0))
    result = client.images.edit(
        image=[("a.png", png(a), "image/png"), ("b.png", png(b), "image/png")],  # sent as image[]
        mask=("mask.png", png(mask), "image/png"),
        prompt="a cat",
        n=2,
        response_format="b64_json",
        extra_body={**FAST, "seed": 3},
    )
    outs = [decoded(d.b64_json).convert("RGB") for d in result.data]
    assert len(outs) == 4
    right = (32, 0, 64, 64)
    for i, out in enumerate(outs):  # output i edits image i mod 2; the opaque half comes back as sent
        src = (a, b)[i % 2]
        assert out.crop(right).tobytes() == src.crop(right).tobytes()
        assert out.crop((0, 0, 32, 64)).tobytes() != src.crop((0, 0, 32, 64)).tobytes()


def test_errors_are_openai_exceptions_with_our_messages(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="a cat", size="4096x4096", extra_body=FAST)
    assert e.value.status_code == 400
    assert e.value.code == "invalid_value" and e.value.param == "size"
    assert "Invalid 'size': 4096x4096 is above the maximum of 2048x2048 (set --max-width/--max-height)." in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="a cat", n=7, size="64x64", extra_body=FAST)
    assert e.value.code == "integer_above_max_value" and e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="<be-face:lucy:0.4> a cat", size="64x64", extra_body=FAST)
    assert e.value.code == "unknown_avatar" and "unknown face avatar 'lucy'" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("x.png", b"not an image", "image/png"), prompt="a cat")
    assert e.value.param == "image" and "not a decodable image" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-3")


def test_generate_stream_yields_partial_and_completed_events(client):
    stream = client.images.generate(
        prompt="a photo of a cat",
        size="64x64",
        stream=True,
        partial_images=2,
        extra_body={"steps": 6, "seed": 4},
    )
    events = list(stream)
    assert events[-1].type == "image_generation.completed"
    completed = events[-1]
    assert completed.size == "64x64" and completed.output_format == "png"
    assert decoded(completed.b64_json).size == (64, 64)
    partials = events[:-1]
    assert len(partials) <= 2
    for i, event in enumerate(partials):
        assert event.type == "image_generation.partial_image" and event.partial_image_index == i
        assert decoded(event.b64_json).format == "PNG"


def test_edit_stream(client):
    stream = client.images.edit(
        image=("cat.png", png(_init()), "image/png"), prompt="a cat", stream=True, partial_images=1, extra_body=FAST
    )
    events = list(stream)
    assert events[-1].type == "image_edit.completed"
    assert all(e.type == "image_edit.partial_image" for e in events[:-1])
