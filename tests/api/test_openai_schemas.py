"""The OpenAI images wire schema, its translation to a GenerationSpec, and the stream's event choice (no model)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image, ImageDraw

from pictale.api.openai.schemas import (
    Context,
    EditRequest,
    ImagesRequest,
    OpenAIParamError,
    interleave,
    one_spec_per_job,
    openai_mask,
    revised_prompt,
    transparency_mask,
)
from pictale.api.openai.stream import image_events
from pictale.core.config import Settings
from pictale.core.errors import InvalidImage, InvalidRequest
from pictale.core.types import Mode, ModelEntry
from pictale.jobs.queue import Job
from pictale.service.profiles import default_profile

SD15 = ModelEntry("tiny-sd15 [73dbf4f010]", "tiny-sd15", "/m/tiny-sd15", "folder", "sd15", "73dbf4f010" * 6)
SDXL = ModelEntry("tiny-sdxl [67e8b05ad3]", "tiny-sdxl", "/m/Stable-diffusion/tiny-sdxl", "folder", "sdxl")


def ctx(tmp_path, current=SD15, **settings) -> Context:
    return Context(Settings(data_dir=tmp_path, **settings), [SDXL, SD15], current)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_defaults_and_extensions(tmp_path):
    spec = ImagesRequest(prompt="a cat").to_spec(ctx(tmp_path))
    assert (spec.width, spec.height, spec.steps, spec.cfg_scale, spec.seed) == (512, 512, 20, 7.0, -1)
    assert (spec.sampler, spec.scheduler, spec.batch_size, spec.model) == ("DPM++ 2M", "automatic", 1, None)
    body = ImagesRequest.parse(
        {
            "prompt": "a cat",
            "n": "3",
            "negprompt": "blurry",
            "seed": "5",
            "steps": "4",
            "cfg_scale": "5.5",
            "sampler_name": "Euler a",
            "clip_skip": "2",
            "size": " 96X64 ",
            "quality": 7,  # ignored fields accept anything
            "style": {"weird": True},
        }
    )
    spec = body.to_spec(ctx(tmp_path))
    assert (spec.batch_size, spec.negative_prompt, spec.seed, spec.steps, spec.cfg_scale) == (3, "blurry", 5, 4, 5.5)
    assert (spec.sampler, spec.clip_skip, spec.width, spec.height) == ("Euler a", 2, 96, 64)
    spec = ImagesRequest(prompt="x", sampler="DPM++ 2M Karras", guidance=3).to_spec(ctx(tmp_path))
    assert (spec.sampler, spec.scheduler, spec.cfg_scale) == ("DPM++ 2M", "automatic", 3.0)
    assert ImagesRequest.parse({"prompt": "x", "negative_prompt": "a", "negprompt": "b"}).negative_prompt == "a"
    assert ImagesRequest.parse({"prompt": "x", "size": "", "n": ""}).to_spec(ctx(tmp_path)).batch_size == 1


def test_native_size_follows_the_model_family(tmp_path):
    assert ImagesRequest(prompt="x", size="auto").to_spec(ctx(tmp_path, current=SDXL)).width == 1024
    spec = ImagesRequest(prompt="x", model="tiny-sdxl").to_spec(ctx(tmp_path))
    assert (spec.width, spec.model) == (1024, SDXL.title)
    assert ImagesRequest(prompt="x").to_spec(ctx(tmp_path, current=SDXL, max_width=768)).width == 768


def test_few_step_models_get_their_profile_defaults(tmp_path):
    turbo = default_profile("turbo")
    c = Context(Settings(data_dir=tmp_path), [SDXL, SD15], SDXL, profile_for=lambda entry: turbo)
    spec = ImagesRequest(prompt="x").to_spec(c)
    assert (spec.sampler, spec.scheduler, spec.steps, spec.cfg_scale, spec.width) == (
        "Euler a",
        "sgm_uniform",
        1,
        1.0,
        512,
    )
    spec = ImagesRequest(prompt="x", steps=3, guidance=2, sampler="Euler", size="64x64").to_spec(c)
    assert (spec.sampler, spec.scheduler, spec.steps, spec.cfg_scale, spec.width) == ("Euler", "automatic", 3, 2.0, 64)
    seen = []
    c = Context(Settings(data_dir=tmp_path), [SDXL, SD15], SD15, profile_for=lambda e: seen.append(e) or turbo)
    ImagesRequest(prompt="x", model="tiny-sdxl").to_spec(c)
    assert seen and all(e is SDXL for e in seen)  # the requested checkpoint's profile


def test_model_names(tmp_path):
    c = ctx(tmp_path)
    for name in ("tiny-sdxl", SDXL.title, "tiny-sdxl [0000000000]", "/m/Stable-diffusion/tiny-sdxl"):
        assert ImagesRequest(prompt="x", model=name).to_spec(c).model == SDXL.title
    for name in ("dall-e-2", "dall-e-3", "gpt-image-1", "", "be-stable-diffusion-xl-base-1.0"):
        assert ImagesRequest(prompt="x", model=name, size="64x64").to_spec(c).model is None


def test_response_formats(tmp_path):
    c = ctx(tmp_path)
    assert ImagesRequest(prompt="x").delivery(c).response_format == "url"
    assert ImagesRequest(prompt="x", model="gpt-image-1").delivery(c).response_format == "b64_json"
    out = ImagesRequest(prompt="x", response_format="b64_json", output_format="JPG", quality="high").delivery(c)
    assert (out.response_format, out.output_format, out.quality, out.background) == ("b64_json", "jpeg", "high", "auto")
    assert ImagesRequest(prompt="x", quality="smooth", background="opaque").delivery(c).quality == "auto"
    with pytest.raises(OpenAIParamError) as e:
        ImagesRequest(prompt="x", response_format="png").delivery(c)
    assert e.value.message == "Invalid value: 'png'. Supported values are: 'url' and 'b64_json'."
    assert e.value.param == "response_format" and e.value.code == "invalid_value"
    with pytest.raises(OpenAIParamError, match="partial_images"):
        ImagesRequest(prompt="x", stream=True, partial_images=4).delivery(c)
    with pytest.raises(OpenAIParamError, match="'png', 'jpeg' and 'webp'"):
        ImagesRequest(prompt="x", output_format="gif").delivery(c)


@pytest.mark.parametrize(
    ("fields", "message", "param", "code"),
    [
        ({}, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"),
        ({"prompt": " "}, "Invalid 'prompt': empty string.", "prompt", "empty_string"),
        ({"prompt": "x", "n": 0}, "Invalid 'n': integer below minimum value.", "n", "integer_below_min_value"),
        ({"prompt": "x", "n": 17}, "Invalid 'n': integer above maximum value.", "n", "integer_above_max_value"),
        ({"prompt": "x", "size": "big"}, "Invalid 'size': 'big'. Expected 'auto' or 'WIDTHxHEIGHT'", "size", None),
        ({"prompt": "x", "size": "4x4"}, "Invalid 'size': 4x4 is below the minimum of 64x64.", "size", None),
        (
            {"prompt": "x", "size": "64x4096"},
            "Invalid 'size': 64x4096 is above the maximum of 2048x2048 (set --max-width/--max-height).",
            "size",
            None,
        ),
    ],
)
def test_invalid_generation_requests(tmp_path, fields, message, param, code):
    with pytest.raises(OpenAIParamError) as e:
        ImagesRequest(**fields).to_spec(ctx(tmp_path))
    assert e.value.message.startswith(message)
    assert e.value.param == param and e.value.code == (code or "invalid_value")


def test_block_entropy_compat(tmp_path):
    spec = ImagesRequest(prompt="x", n=42).to_spec(ctx(tmp_path, compat="blockentropy"))
    assert (spec.seed, spec.batch_size, spec.width, spec.height) == (42, 1, 1024, 1024)
    spec = ImagesRequest(prompt="x", n=7, model="be-stable-diffusion-xl-base-1.0", size="64x64").to_spec(ctx(tmp_path))
    assert (spec.seed, spec.batch_size, spec.width) == (7, 1, 64)
    assert ImagesRequest(prompt="x", n=7, seed=3, model="be-x").to_spec(ctx(tmp_path)).seed == 3
    assert ImagesRequest(prompt="x", model="be-x").to_spec(ctx(tmp_path)).seed == -1  # not 42
    # outside compat mode n is the count and a large n is refused, not taken as a seed
    with pytest.raises(OpenAIParamError):
        ImagesRequest(prompt="x", n=42).to_spec(ctx(tmp_path))


def _init(color=(200, 30, 30), size=(64, 48)) -> Image.Image:
    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle((10, 10, 40, 30), fill=(20, 200, 90))
    return img


def test_edit_spec_several_images_and_n(tmp_path):
    images = [("image[0]", png(_init())), ("image[1]", png(_init((0, 0, 200))))]
    spec = EditRequest(prompt="x", n=3).to_spec(ctx(tmp_path), images)
    assert spec.mode is Mode.IMG2IMG and len(spec.init_images) == 2
    assert (spec.batch_size, spec.n_iter, spec.total_images) == (2, 3, 6)
    # the image's own size, scaled up so its short side reaches the minimum of 64 (64x48 -> 85x64 -> 80x64)
    assert (spec.width, spec.height, spec.denoising_strength) == (80, 64, 0.75)
    with pytest.raises(OpenAIParamError) as e:
        EditRequest(prompt="x", n=9).to_spec(ctx(tmp_path), images)
    assert e.value.message.startswith("Invalid 'n': integer above maximum value. Expected a value <= 8, but got 9")
    spec = EditRequest.parse({"prompt": "x", "strength": "0.3", "size": "128x64"}).to_spec(ctx(tmp_path), images)
    assert (spec.denoising_strength, spec.width) == (0.3, 128)
    big = Image.new("RGB", (4000, 1000))
    spec = EditRequest(prompt="x").to_spec(ctx(tmp_path), [("image", png(big))])
    assert (spec.width, spec.height) == (2048, 512)


def test_edit_errors(tmp_path):
    with pytest.raises(OpenAIParamError, match=r"Missing required parameter: 'image'\."):
        EditRequest(prompt="x").to_spec(ctx(tmp_path), [])
    with pytest.raises(OpenAIParamError, match=r"Missing required parameter: 'prompt'\."):
        EditRequest().to_spec(ctx(tmp_path), [("image", png(_init()))])
    with pytest.raises(InvalidImage) as e:
        EditRequest(prompt="x").to_spec(ctx(tmp_path), [("image", b"not an image")])
    assert e.value.param == "image" and e.value.message.startswith("image: not a decodable image")
    with pytest.raises(InvalidImage, match="the mask is 32x32 but the image is 64x48"):
        EditRequest(prompt="x").to_spec(
            ctx(tmp_path), [("image", png(_init()))], ("mask", png(Image.new("LA", (32, 32))))
        )
    opaque = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    with pytest.raises(InvalidImage, match="no fully transparent pixels"):
        EditRequest(prompt="x").to_spec(ctx(tmp_path), [("image", png(_init()))], ("mask", png(opaque)))
    with pytest.raises(OpenAIParamError, match="strength"):
        EditRequest(prompt="x", strength=1.5).to_spec(ctx(tmp_path), [("image", png(_init()))])


def test_masks_follow_openai_alpha_rule(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 255))
    rgba.putpixel((1, 1), (255, 255, 255, 0))
    rgba.putpixel((2, 2), (0, 0, 0, 10))  # partly transparent: kept
    m = openai_mask(rgba)
    assert m.mode == "L" and m.getpixel((1, 1)) == 255 and m.getpixel((2, 2)) == 0 and m.getpixel((5, 5)) == 0
    grey = Image.new("L", (8, 8), 0)
    grey.putpixel((3, 3), 255)
    assert openai_mask(grey).getbbox() == (3, 3, 4, 4)  # no alpha channel: white = edit, as A1111
    assert transparency_mask(Image.new("RGB", (8, 8))) is None
    assert transparency_mask(Image.new("RGBA", (8, 8), (0, 0, 0, 255))) is None
    assert transparency_mask(rgba).getbbox() == (1, 1, 2, 2)
    image = Image.new("RGBA", (64, 48), (200, 30, 30, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 15, 15), fill=(0, 0, 0, 0))
    spec = EditRequest(prompt="x").to_spec(ctx(tmp_path), [("image", png(image))])
    assert spec.mode is Mode.INPAINT and spec.mask.getbbox() == (0, 0, 16, 16)
    assert (spec.denoising_strength, spec.mask_blur, spec.inpaint_full_res) == (1.0, 0, False)


def test_masked_edits_of_several_images_run_one_job_per_image(tmp_path):
    images = [("image[0]", png(_init())), ("image[1]", png(_init((0, 0, 200))))]
    mask = ("mask", png(Image.new("LA", (64, 48), (0, 0))))
    spec = EditRequest(prompt="x", n=3, seed=10).to_spec(ctx(tmp_path), images, mask)
    specs = one_spec_per_job(spec)
    assert [(len(s.init_images), s.batch_size, s.n_iter, s.seed) for s in specs] == [(1, 3, 1, 10), (1, 3, 1, 13)]
    assert specs[1].init_images[0] is spec.init_images[1]
    unmasked = EditRequest(prompt="x").to_spec(ctx(tmp_path), images)
    assert one_spec_per_job(unmasked) == [unmasked]  # img2img of several images: one job, one batch per n
    assert [s.seed for s in one_spec_per_job(EditRequest(prompt="x").to_spec(ctx(tmp_path), images, mask))] == [-1, -1]
    assert interleave([[b"a0", b"a1"], [b"b0", b"b1"]]) == [b"a0", b"b0", b"a1", b"b1"]
    assert interleave([[b"a0", b"a1"]]) == [b"a0", b"a1"]


def test_revised_prompt_only_when_tokens_were_removed():
    assert revised_prompt("a girl playing tennis") is None
    assert revised_prompt("<be-face:lucy:0.4> a girl, <lora:toy:0.9> playing tennis") == "a girl, playing tennis"


# -- the stream's choice of partial images ---------------------------------------------------------------
def _preview(value: int) -> str:
    return base64.b64encode(png(Image.new("RGB", (8, 8), (value, value, value)))).decode()


def _events(chunks: list[bytes]) -> list[tuple[str, dict]]:
    out = []
    for chunk in chunks:
        event, data = chunk.decode().strip().split("\n")
        out.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


async def _collect(*jobs, partial=2) -> list[bytes]:
    from pictale.api.openai.schemas import Delivery

    delivery = Delivery("b64_json", None, None, True, partial, "auto", "auto")
    args = {"prefix": "image_generation", "delivery": delivery, "size": "8x8", "output_format": "png"}
    return [c async for c in image_events(jobs, **args, finish=lambda results: [b for r in results for b in r])]


def _job_with_steps(total: int, previews: bool = True, first: int = 0) -> Job:
    job = Job(work=lambda j: None)
    job.events.emit("started")
    for step in range(1, total + 1):
        job.report(step, total, preview=_preview(first + step * 10) if previews else None)
    job.future.set_result([b"\x89PNG final"])
    job.events.emit("done")
    return job


def test_partial_images_are_spread_over_the_run():
    events = _events(asyncio.run(_collect(_job_with_steps(9))))
    assert [e for e, _ in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    first, second, done = (d for _, d in events)
    assert first["partial_image_index"] == 0 and second["partial_image_index"] == 1
    # 2 partial images: the first previews after 1/3 and 2/3 of the run (steps 3 and 6 of 9)
    assert first["b64_json"] == _preview(30) and second["b64_json"] == _preview(60)
    assert set(first) == {
        "type",
        "b64_json",
        "created_at",
        "size",
        "quality",
        "background",
        "output_format",
        "partial_image_index",
    }
    assert set(done) == {"type", "b64_json", "created_at", "size", "quality", "background", "output_format", "usage"}
    assert base64.b64decode(done["b64_json"]) == b"\x89PNG final"
    assert done["usage"]["total_tokens"] == 0
    # several jobs (a masked edit of several images) run one after the other: partials spread over all
    events = _events(asyncio.run(_collect(_job_with_steps(3), _job_with_steps(3, first=100), partial=3)))
    assert [e for e, _ in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"] * 2
    assert [d["b64_json"] for _, d in events[:3]] == [_preview(20), _preview(30), _preview(120)]


def test_stream_without_previews_or_with_failure():
    events = _events(asyncio.run(_collect(_job_with_steps(4, previews=False))))
    assert [e for e, _ in events] == ["image_generation.completed"]
    events = _events(asyncio.run(_collect(_job_with_steps(4), partial=0)))
    assert [e for e, _ in events] == ["image_generation.completed"]
    job = Job(work=lambda j: None)
    job.future.set_exception(InvalidRequest("steps must be from 1 to 150 (got 0)", param="steps"))
    job.events.emit("failed", error="boom")
    error = {"message": "steps must be from 1 to 150 (got 0)", "type": "invalid_request_error", "param": "steps"}
    assert _events(asyncio.run(_collect(job))) == [
        ("error", {"type": "error", "error": error | {"code": "invalid_request"}})
    ]


def test_stream_closed_early_cancels_the_job():
    job = Job(work=lambda j: None)
    job.report(1, 3, preview=_preview(1))

    async def first_then_close():
        from pictale.api.openai.schemas import Delivery

        delivery = Delivery("b64_json", None, None, True, 3, "auto", "auto")
        gen = image_events([job], prefix="image_edit", delivery=delivery, size="8x8", output_format="png", finish=list)
        chunk = await gen.__anext__()
        await gen.aclose()
        return chunk

    assert b"image_edit.partial_image" in asyncio.run(first_then_close())
    assert job.cancelled
