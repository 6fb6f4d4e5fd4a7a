"""Bad input on every route family: a 4xx that names the field or the limit, never a 500, never a traceback.

One table. Each case sends one request and asserts the status, words the message must contain (the field,
the limit), and that no Python traceback or exception class name reaches the client. Cases run against one
app on the tiny SD 1.5 model; none of them generates an image (the positive cases live beside the features).
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.api.conftest import make_client

BIG = 2**70
MB_TEXT = "a" * 1_000_000
PROMPT_LIMIT = "10000"


def _png(size: tuple[int, int], mode: str = "RGB", color: Any = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


SMALL_PNG = _png((64, 64), color=(200, 30, 30))
SMALL_B64 = base64.b64encode(SMALL_PNG).decode()
# 5000x5000 bilevel: a few KB of file, 25 M pixels (the limit is 4096x4096): refused before decoding
HUGE_PNG = _png((5000, 5000), "1")
HUGE_B64 = base64.b64encode(HUGE_PNG).decode()
NOT_B64 = "this is not an image!!"
NOT_IMAGE_B64 = base64.b64encode(b"hello, I am not a picture").decode()
NESTED = "[" * 100_000 + "]" * 100_000
NESTED_OBJ = '{"prompt": ' + "[" * 50_000 + "]" * 50_000 + "}"


@dataclass
class Case:
    id: str
    method: str
    path: str
    status: int
    needles: tuple[str, ...]
    kw: dict[str, Any] = field(default_factory=dict)


def J(case_id: str, path: str, body: Any, status: int, *needles: str, method: str = "POST") -> Case:
    """A JSON body (sent as raw text so NaN / Infinity / huge integers go over the wire as written)."""
    content = body if isinstance(body, str) else json.dumps(body)
    kw = {"content": content, "headers": {"Content-Type": "application/json"}}
    return Case(case_id, method, path, status, needles, kw)


def R(case_id: str, method: str, path: str, status: int, *needles: str, **kw: Any) -> Case:
    """Any other request (multipart, query, raw body, headers)."""
    return Case(case_id, method, path, status, needles, kw)


T2I = "/sdapi/v1/txt2img"
I2I = "/sdapi/v1/img2img"
GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
JOBS = "/v1/jobs"
IMAGINE = "/v1/story/imagine"
BOOKS = "/v1/books"
CHARS = "/v1/characters"
AVATARS = "/v1/avatars"
MSG = [{"role": "user", "content": "a dragon in the snow"}]
STORY = "A fox found a red ball.\n\nThe fox played in the snow."


def _a1111_cases() -> list[Case]:
    t = [
        J("t2i-seed-huge", T2I, {"seed": BIG}, 422, "seed", "4294967295"),
        J("t2i-seed-below", T2I, {"seed": -2}, 422, "seed", "-1"),
        J("t2i-subseed-huge", T2I, {"subseed": BIG}, 422, "subseed", "4294967295"),
        J("t2i-seed-text", T2I, {"seed": "abc"}, 422, "seed"),
        J("t2i-seed-float", T2I, {"seed": 1.5}, 422, "seed"),
        J("t2i-cfg-nan", T2I, '{"cfg_scale": NaN}', 422, "cfg_scale", "finite"),
        J("t2i-cfg-inf", T2I, '{"cfg_scale": Infinity}', 422, "cfg_scale", "finite"),
        J("t2i-cfg-neginf", T2I, '{"cfg_scale": -Infinity}', 422, "cfg_scale", "finite"),
        J("t2i-denoise-nan", T2I, '{"denoising_strength": NaN}', 422, "denoising_strength"),
        J("t2i-subseed-strength-inf", T2I, '{"subseed_strength": Infinity}', 422, "subseed_strength"),
        J("t2i-subseed-strength-range", T2I, {"subseed_strength": 3}, 422, "subseed_strength"),
        J("t2i-eta-nan", T2I, '{"eta": NaN}', 422, "eta"),
        J("t2i-hr-scale-nan", T2I, '{"enable_hr": true, "hr_scale": NaN}', 422, "hr_scale"),
        J("t2i-hr-scale-inf", T2I, '{"enable_hr": true, "hr_scale": Infinity}', 422, "hr_scale"),
        J("t2i-hr-scale-huge", T2I, {"enable_hr": True, "hr_scale": 1e300}, 422, "hr_scale", "2048"),
        J("t2i-hr-scale-negative", T2I, {"enable_hr": True, "hr_scale": -2}, 422, "hr_scale"),
        J("t2i-hr-steps-huge", T2I, {"enable_hr": True, "hr_second_pass_steps": BIG}, 422, "hr_second_pass_steps"),
        J("t2i-hr-resize-huge", T2I, {"enable_hr": True, "hr_resize_x": BIG}, 422, "hr"),
        J("t2i-hr-upscaler", T2I, {"enable_hr": True, "hr_upscaler": "ESRGAN_9x"}, 422, "hr_upscaler"),
        J("t2i-steps-huge", T2I, {"steps": BIG}, 422, "steps", "150"),
        J("t2i-steps-over", T2I, {"steps": 151}, 422, "steps", "150"),
        J("t2i-steps-zero", T2I, {"steps": 0}, 422, "steps"),
        J("t2i-batch-huge", T2I, {"batch_size": BIG}, 422, "batch_size", "16"),
        J("t2i-niter-huge", T2I, {"n_iter": 10**30}, 422, "n_iter", "16"),
        J("t2i-batch-total", T2I, {"batch_size": 8, "n_iter": 3}, 422, "batch_size", "16"),
        J("t2i-width-zero", T2I, {"width": 0}, 422, "width", "64"),
        J("t2i-width-13", T2I, {"width": 13}, 422, "width", "64"),
        J("t2i-height-negative", T2I, {"height": -512}, 422, "height"),
        J("t2i-width-million", T2I, {"width": 1000000}, 422, "width", "2048"),
        J("t2i-width-huge", T2I, {"width": BIG}, 422, "width", "2048"),
        J("t2i-width-text", T2I, {"width": "wide"}, 422, "width"),
        J("t2i-prompt-1mb", T2I, {"prompt": MB_TEXT}, 422, "prompt", PROMPT_LIMIT),
        J("t2i-negative-1mb", T2I, {"negative_prompt": MB_TEXT}, 422, "negative_prompt", PROMPT_LIMIT),
        J("t2i-prompt-list-1mb", T2I, {"prompt": ["a", MB_TEXT], "batch_size": 2}, 422, "prompt", PROMPT_LIMIT),
        J("t2i-hr-prompt-1mb", T2I, {"enable_hr": True, "hr_prompt": MB_TEXT}, 422, "hr_prompt", PROMPT_LIMIT),
        J("t2i-prompt-object", T2I, {"prompt": {"a": 1}}, 422, "prompt"),
        J("t2i-clip-skip-nan", T2I, '{"override_settings": {"CLIP_stop_at_last_layers": NaN}}', 422, "CLIP_stop"),
        J("t2i-clip-skip-huge", T2I, {"override_settings": {"CLIP_stop_at_last_layers": BIG}}, 422, "CLIP_stop"),
        J("t2i-override-model", T2I, {"override_settings": {"sd_model_checkpoint": "nope"}}, 404, "nope"),
        J("t2i-script", T2I, {"script_name": "x/y/z plot"}, 422, "x/y/z plot"),
        J("t2i-alwayson", T2I, {"alwayson_scripts": {"controlnet": {}}}, 422, "controlnet"),
        J("t2i-avatar-unknown", T2I, {"prompt": "<be-face:nobody:0.5> a cat"}, 422, "<be-face:nobody:0.5>"),
        J("t2i-avatar-weight", T2I, {"prompt": "<be-lora:x:NaN> a cat"}, 422, "<be-lora:x:NaN>"),
        J("t2i-char-unknown", T2I, {"prompt": "<be-char:ghost> a cat"}, 422, "ghost"),
        J("t2i-nested", T2I, NESTED_OBJ, 400, "body"),
        J("t2i-nested-array", T2I, NESTED, 400, "body"),
        J("t2i-invalid-json", T2I, '{"prompt": "a cat"', 422, "json"),
        J("t2i-array-body", T2I, "[1, 2]", 422, "body"),
        J("t2i-string-body", T2I, '"a cat"', 422, "body"),
        R("t2i-form-body", "POST", T2I, 415, "application/json", data={"prompt": "a cat"}),
        R("t2i-text-not-json", "POST", T2I, 415, "application/json", content=b"prompt: a cat"),
        R("t2i-bad-utf8", "POST", T2I, 4, "body", content=b'{"prompt": "\xff\xfe"}', headers=_json_ct()),
    ]
    i = [
        J("i2i-no-init", I2I, {"prompt": "x"}, 404, "init"),
        J("i2i-init-not-b64", I2I, {"init_images": [NOT_B64]}, 422, "init_images[0]"),
        J("i2i-init-not-image", I2I, {"init_images": [NOT_IMAGE_B64]}, 422, "init_images[0]", "image"),
        J("i2i-init-huge", I2I, {"init_images": [HUGE_B64]}, 422, "init_images[0]", "5000x5000", "16777216"),
        J(
            "i2i-init-huge-dataurl",
            I2I,
            {"init_images": ["data:image/png;base64," + HUGE_B64]},
            422,
            "init_images[0]",
            "16777216",
        ),
        J("i2i-init-url", I2I, {"init_images": ["https://example.com/a.png"]}, 422, "init_images[0]", "base64"),
        J("i2i-init-empty", I2I, {"init_images": [""]}, 422, "init_images[0]", "empty"),
        J("i2i-init-string", I2I, {"init_images": SMALL_B64}, 422, "init_images"),
        J("i2i-second-bad", I2I, {"init_images": [SMALL_B64, NOT_IMAGE_B64]}, 422, "init_images[1]"),
        J("i2i-mask-bad", I2I, {"init_images": [SMALL_B64], "mask": NOT_IMAGE_B64}, 422, "mask"),
        J("i2i-mask-not-b64", I2I, {"init_images": [SMALL_B64], "mask": NOT_B64}, 422, "mask"),
        J("i2i-mask-huge", I2I, {"init_images": [SMALL_B64], "mask": HUGE_B64}, 422, "mask", "16777216"),
        J("i2i-mask-wrong-type", I2I, {"init_images": [SMALL_B64], "mask": 5}, 422, "mask"),
        J("i2i-denoise-2", I2I, {"init_images": [SMALL_B64], "denoising_strength": 2}, 422, "denoising_strength"),
        J("i2i-denoise-nan", I2I, '{"init_images": ["x"], "denoising_strength": NaN}', 422, "denoising_strength"),
        J("i2i-resize-mode", I2I, {"init_images": [SMALL_B64], "resize_mode": 9}, 422, "resize_mode"),
        J("i2i-mask-blur", I2I, {"init_images": [SMALL_B64], "mask_blur": -1}, 422, "mask_blur"),
        J("i2i-mask-blur-huge", I2I, {"init_images": [SMALL_B64], "mask_blur_x": BIG}, 422, "mask_blur"),
        J("i2i-fill", I2I, {"init_images": [SMALL_B64], "inpainting_fill": 7}, 422, "inpainting_fill"),
        J("i2i-padding-huge", I2I, {"init_images": [SMALL_B64], "inpaint_full_res_padding": BIG}, 422, "padding"),
        J("i2i-seed-huge", I2I, {"init_images": [SMALL_B64], "seed": BIG}, 422, "seed"),
        J("i2i-cfg-inf", I2I, '{"init_images": ["x"], "cfg_scale": Infinity}', 422, "cfg_scale"),
        J("i2i-initial-noise-nan", I2I, '{"initial_noise_multiplier": NaN}', 422, "initial_noise_multiplier"),
        J("i2i-too-many", I2I, {"init_images": [SMALL_B64] * 17}, 422, "init_images", "16"),
        J("i2i-nested", I2I, NESTED_OBJ, 400, "body"),
    ]
    other = [
        J("pnginfo-not-b64", "/sdapi/v1/png-info", {"image": NOT_B64}, 422, "image"),
        J("pnginfo-not-image", "/sdapi/v1/png-info", {"image": NOT_IMAGE_B64}, 422, "image"),
        J("pnginfo-huge", "/sdapi/v1/png-info", {"image": HUGE_B64}, 422, "image", "16777216"),
        J("pnginfo-huge-dataurl", "/sdapi/v1/png-info", {"image": "data:image/png;base64," + HUGE_B64}, 422, "image"),
        J("pnginfo-wrong-type", "/sdapi/v1/png-info", {"image": {"a": 1}}, 422, "image"),
        J("pnginfo-nested", "/sdapi/v1/png-info", NESTED_OBJ, 400, "body"),
        R("pnginfo-form", "POST", "/sdapi/v1/png-info", 415, "application/json", data={"image": "x"}),
        J("options-model", "/sdapi/v1/options", {"sd_model_checkpoint": "nope.safetensors"}, 404, "nope"),
        J("options-clip-nan", "/sdapi/v1/options", '{"CLIP_stop_at_last_layers": NaN}', 422, "CLIP_stop"),
        J("options-clip-huge", "/sdapi/v1/options", {"CLIP_stop_at_last_layers": BIG}, 422, "CLIP_stop"),
        J("options-clip-text", "/sdapi/v1/options", {"CLIP_stop_at_last_layers": "two"}, 422, "CLIP_stop"),
        J("options-format", "/sdapi/v1/options", {"samples_format": "exe"}, 422, "samples_format"),
        J("options-array", "/sdapi/v1/options", "[1]", 422, "body"),
        J("options-nan-any", "/sdapi/v1/options", '{"some_float_option": NaN}', 422, "some_float_option"),
        J("options-nested", "/sdapi/v1/options", NESTED_OBJ, 400, "body"),
        R("progress-skip-bool", "GET", "/sdapi/v1/progress?skip_current_image=maybe", 422, "skip_current_image"),
        R("unknown-route", "GET", "/sdapi/v1/nothing-here", 404, "not found"),
        R("txt2img-get", "GET", T2I, 405, "method"),
    ]
    return t + i + other


def _json_ct() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _openai_cases() -> list[Case]:
    g = [
        J("gen-seed-huge", GEN, {"prompt": "a", "seed": BIG}, 400, "seed", "4294967295"),
        J("gen-seed-below", GEN, {"prompt": "a", "seed": -7}, 400, "seed"),
        J("gen-n-huge", GEN, {"prompt": "a", "n": BIG}, 400, "'n'", "16"),
        J("gen-n-zero", GEN, {"prompt": "a", "n": 0}, 400, "'n'"),
        J("gen-steps-huge", GEN, {"prompt": "a", "steps": BIG}, 400, "steps", "150"),
        J("gen-guidance-nan", GEN, '{"prompt": "a", "guidance": NaN}', 400, "guidance", "finite"),
        J("gen-guidance-inf", GEN, '{"prompt": "a", "guidance_scale": Infinity}', 400, "guidance", "finite"),
        J("gen-size-zero", GEN, {"prompt": "a", "size": "0x0"}, 400, "size", "64"),
        J("gen-size-13", GEN, {"prompt": "a", "size": "13x13"}, 400, "size", "64"),
        J("gen-size-100", GEN, {"prompt": "a", "size": "100x100"}, 400, "size", "multiple", "96x96"),
        J("gen-size-sideways", GEN, {"prompt": "a", "size": "512x4000"}, 400, "size", "2048"),
        J("gen-size-million", GEN, {"prompt": "a", "size": "1000000x1000000"}, 400, "size", "2048"),
        J("gen-size-huge", GEN, {"prompt": "a", "size": "99999999999x99999999999"}, 400, "size", "2048"),
        J("gen-size-word", GEN, {"prompt": "a", "size": "banana"}, 400, "size", "WIDTHxHEIGHT"),
        J("gen-size-negative", GEN, {"prompt": "a", "size": "-512x512"}, 400, "size"),
        J("gen-size-number", GEN, {"prompt": "a", "size": 512}, 400, "size"),
        J("gen-prompt-1mb", GEN, {"prompt": MB_TEXT}, 400, "prompt", PROMPT_LIMIT),
        J("gen-negative-1mb", GEN, {"prompt": "a", "negative_prompt": MB_TEXT}, 400, "negative_prompt"),
        J("gen-prompt-missing", GEN, {"n": 1}, 400, "prompt"),
        J("gen-prompt-empty", GEN, {"prompt": ""}, 400, "prompt"),
        J("gen-prompt-number", GEN, {"prompt": 42}, 400, "prompt"),
        J("gen-empty-body", GEN, "", 400, "prompt"),
        J("gen-nested", GEN, NESTED, 400, "JSON"),
        J("gen-nested-obj", GEN, NESTED_OBJ, 400, "JSON"),
        J("gen-array", GEN, "[1]", 400, "object"),
        J("gen-invalid-json", GEN, "{oops", 400, "JSON"),
        J("gen-format", GEN, {"prompt": "a", "response_format": "gif"}, 400, "response_format"),
        J("gen-out-format", GEN, {"prompt": "a", "output_format": "bmp"}, 400, "output_format"),
        J("gen-compression", GEN, {"prompt": "a", "output_compression": 101}, 400, "output_compression"),
        J("gen-compression-huge", GEN, {"prompt": "a", "output_compression": BIG}, 400, "output_compression"),
        J("gen-partial", GEN, {"prompt": "a", "partial_images": 9}, 400, "partial_images"),
        J("gen-clip-skip", GEN, {"prompt": "a", "clip_skip": BIG}, 400, "clip_skip"),
        J("gen-sampler", GEN, {"prompt": "a", "sampler": "Warp Drive"}, 400, "Warp Drive"),
        J("gen-avatar", GEN, {"prompt": "<be-style:nope> a"}, 400, "<be-style:nope>"),
        R("gen-form", "POST", GEN, 415, "application/json", data={"prompt": "a cat"}),
        R("gen-text", "POST", GEN, 415, "application/json", content=b"a cat please"),
    ]
    img = ("image", ("a.png", SMALL_PNG, "image/png"))
    e = [
        R("edit-no-image", "POST", EDIT, 400, "image", data={"prompt": "a"}),
        R("edit-no-prompt", "POST", EDIT, 400, "prompt", files=[img]),
        R("edit-not-image", "POST", EDIT, 400, "image", data={"prompt": "a"}, files=[("image", ("a.png", b"no"))]),
        R(
            "edit-huge",
            "POST",
            EDIT,
            400,
            "image",
            "16777216",
            data={"prompt": "a"},
            files=[("image", ("a.png", HUGE_PNG))],
        ),
        R(
            "edit-mask-bad",
            "POST",
            EDIT,
            400,
            "mask",
            data={"prompt": "a"},
            files=[img, ("mask", ("m.png", b"garbage"))],
        ),
        R(
            "edit-mask-huge",
            "POST",
            EDIT,
            400,
            "mask",
            "16777216",
            data={"prompt": "a"},
            files=[img, ("mask", ("m.png", HUGE_PNG))],
        ),
        R(
            "edit-mask-size",
            "POST",
            EDIT,
            400,
            "mask",
            "dimensions",
            data={"prompt": "a"},
            files=[img, ("mask", ("m.png", _png((32, 32), "RGBA")))],
        ),
        R("edit-strength-nan", "POST", EDIT, 400, "strength", data={"prompt": "a", "strength": "nan"}, files=[img]),
        R("edit-strength-inf", "POST", EDIT, 400, "strength", data={"prompt": "a", "strength": "inf"}, files=[img]),
        R("edit-strength-2", "POST", EDIT, 400, "strength", data={"prompt": "a", "strength": "2"}, files=[img]),
        R("edit-blur-huge", "POST", EDIT, 400, "mask_blur", data={"prompt": "a", "mask_blur": str(BIG)}, files=[img]),
        R("edit-seed-huge", "POST", EDIT, 400, "seed", data={"prompt": "a", "seed": str(BIG)}, files=[img]),
        R("edit-n-huge", "POST", EDIT, 400, "'n'", data={"prompt": "a", "n": str(BIG)}, files=[img]),
        R("edit-size-13", "POST", EDIT, 400, "size", data={"prompt": "a", "size": "13x13"}, files=[img]),
        R("edit-guidance-nan", "POST", EDIT, 400, "guidance", data={"prompt": "a", "guidance": "NaN"}, files=[img]),
        R("edit-prompt-1mb", "POST", EDIT, 400, "prompt", data={"prompt": MB_TEXT}, files=[img]),
        R("edit-too-many", "POST", EDIT, 400, "image", "16", data={"prompt": "a"}, files=[img] * 17),
        J("edit-json-bad-image", EDIT, {"prompt": "a", "image": NOT_IMAGE_B64}, 400, "image"),
        J("edit-json-nested", EDIT, NESTED_OBJ, 400, "JSON"),
        J("edit-json-nan", EDIT, '{"prompt": "a", "image": "x", "strength": NaN}', 400, "strength"),
        R("models-unknown", "GET", "/v1/models/nope", 404, "nope"),
    ]
    return g + e


def _job_cases() -> list[Case]:
    return [
        J("job-seed-huge", JOBS, {"seed": BIG}, 422, "seed", "4294967295"),
        J("job-subseed-huge", JOBS, {"subseed": BIG}, 422, "subseed", "4294967295"),
        J("job-seed-below", JOBS, {"seed": -2}, 422, "seed"),
        J("job-cfg-nan", JOBS, '{"cfg_scale": NaN}', 422, "cfg_scale", "finite"),
        J("job-subseed-strength-inf", JOBS, '{"subseed_strength": Infinity}', 422, "subseed_strength"),
        J("job-denoise-nan", JOBS, '{"denoising_strength": NaN}', 422, "denoising_strength"),
        J("job-hires-scale-nan", JOBS, '{"hires": {"scale": NaN}}', 422, "hires.scale"),
        J("job-hires-scale-inf", JOBS, '{"hires": {"scale": Infinity}}', 422, "hires.scale"),
        J("job-hires-denoise-nan", JOBS, '{"hires": {"denoising_strength": NaN}}', 422, "hires.denoising_strength"),
        J("job-hires-size", JOBS, {"hires": {"resize_x": BIG}}, 422, "hires", "2048"),
        J("job-hires-steps", JOBS, {"hires": {"second_pass_steps": BIG}}, 422, "hires.second_pass_steps"),
        J("job-steps-huge", JOBS, {"steps": BIG}, 422, "steps", "150"),
        J("job-steps-over", JOBS, {"steps": 151}, 422, "steps", "150"),
        J("job-batch-huge", JOBS, {"batch_size": BIG}, 422, "batch_size", "16"),
        J("job-niter-huge", JOBS, {"n_iter": BIG}, 422, "n_iter", "16"),
        J("job-width-0", JOBS, {"width": 0}, 422, "width", "64"),
        J("job-width-13", JOBS, {"width": 13}, 422, "width", "64"),
        J("job-width-million", JOBS, {"width": 1000000}, 422, "width", "2048"),
        J("job-height-huge", JOBS, {"height": BIG}, 422, "height", "2048"),
        J("job-prompt-1mb", JOBS, {"prompt": MB_TEXT}, 422, "prompt", PROMPT_LIMIT),
        J("job-negative-1mb", JOBS, {"negative_prompt": MB_TEXT}, 422, "negative_prompt", PROMPT_LIMIT),
        J("job-hires-prompt-1mb", JOBS, {"hires": {"prompt": MB_TEXT}}, 422, "hires.prompt", PROMPT_LIMIT),
        J("job-unknown-field", JOBS, {"step": 5}, 422, "step"),
        J("job-sampler", JOBS, {"sampler": "Warp Drive"}, 422, "Warp Drive"),
        J("job-scheduler", JOBS, {"scheduler": "sometimes"}, 422, "sometimes"),
        J("job-clip-skip", JOBS, {"clip_skip": BIG}, 422, "clip_skip"),
        J("job-model", JOBS, {"model": "nope"}, 404, "nope"),
        J("job-init-bad", JOBS, {"init_images": [NOT_IMAGE_B64]}, 422, "init_images[0]"),
        J("job-init-huge", JOBS, {"init_images": [HUGE_B64]}, 422, "init_images[0]", "16777216"),
        J("job-mask-bad", JOBS, {"init_images": [SMALL_B64], "mask": NOT_IMAGE_B64}, 422, "mask"),
        J("job-mask-huge", JOBS, {"init_images": [SMALL_B64], "mask": HUGE_B64}, 422, "mask", "16777216"),
        J("job-mask-alone", JOBS, {"mask": SMALL_B64}, 422, "mask", "init_images"),
        J("job-callback-scheme", JOBS, {"callback_url": "ftp://example.com/x"}, 422, "callback_url"),
        J("job-callback-relative", JOBS, {"callback_url": "/done"}, 422, "callback_url"),
        J("job-session-empty", JOBS, {"session": ""}, 422, "session"),
        J("job-avatar", JOBS, {"prompt": "<be-pose:nope:9> a"}, 422, "<be-pose:nope:9>"),
        J("job-empty-body", JOBS, "", 422, "body"),
        J("job-null-body", JOBS, "null", 422, "body"),
        J("job-array", JOBS, "[]", 422, "body"),
        J("job-nested", JOBS, NESTED_OBJ, 400, "body"),
        R("job-form", "POST", JOBS, 415, "application/json", data={"prompt": "a cat"}),
        R("job-get-unknown", "GET", JOBS + "/nope", 404, "nope"),
        R("job-delete-unknown", "DELETE", JOBS + "/nope", 404, "nope"),
        R("job-events-unknown", "GET", JOBS + "/nope/events", 404, "nope"),
        R("job-list-state", "GET", JOBS + "?state=sleeping", 422, "state"),
        R("job-list-limit", "GET", JOBS + f"?limit={BIG}", 422, "limit"),
        R("files-unknown", "GET", "/v1/files/nope", 404, "file"),
    ]


def _story_cases() -> list[Case]:
    return [
        J("img-seed-huge", IMAGINE, {"messages": MSG, "seed": BIG}, 422, "seed", "4294967295"),
        J("img-size-zero", IMAGINE, {"messages": MSG, "size": "0x0"}, 422, "size", "64"),
        J("img-size-13", IMAGINE, {"messages": MSG, "size": "13x13"}, 422, "size", "64"),
        J("img-size-odd", IMAGINE, {"messages": MSG, "size": "500x500"}, 422, "size", "multiple", "496x496"),
        J("img-size-million", IMAGINE, {"messages": MSG, "size": "1000000x1000000"}, 422, "size", "2048"),
        J("img-size-word", IMAGINE, {"messages": MSG, "size": "big"}, 422, "size"),
        J("img-width-13", IMAGINE, {"messages": MSG, "width": 13}, 422, "width", "64"),
        J("img-width-huge", IMAGINE, {"messages": MSG, "width": BIG}, 422, "width", "2048"),
        J("img-steps-huge", IMAGINE, {"messages": MSG, "steps": BIG}, 422, "steps", "150"),
        J("img-cfg-nan", IMAGINE, '{"messages": [{"role": "user", "content": "a"}], "cfg_scale": NaN}', 422, "cfg"),
        J("img-messages-empty", IMAGINE, {"messages": []}, 422, "messages"),
        J("img-messages-missing", IMAGINE, {}, 422, "messages"),
        J("img-message-1mb", IMAGINE, {"messages": [{"role": "user", "content": MB_TEXT}]}, 422, "content"),
        J("img-negative-1mb", IMAGINE, {"messages": MSG, "negative_prompt": MB_TEXT}, 422, "negative_prompt"),
        J("img-character", IMAGINE, {"messages": MSG, "character": "ghost"}, 422, "ghost"),
        J("img-mode", IMAGINE, {"messages": MSG, "mode": "sideways"}, 422, "mode", "sideways"),
        J("img-context", IMAGINE, {"messages": MSG, "context": BIG}, 422, "context"),
        J("img-sampler", IMAGINE, {"messages": MSG, "sampler": "Warp Drive"}, 422, "Warp Drive"),
        J("img-unknown-field", IMAGINE, {"messages": MSG, "prompt": "x"}, 422, "prompt"),
        J("img-empty-body", IMAGINE, "", 422, "body"),
        J("img-nested", IMAGINE, NESTED_OBJ, 400, "body"),
        J("book-seed-huge", BOOKS, {"story": STORY, "seed": BIG}, 422, "seed", "4294967295"),
        J("book-steps-over", BOOKS, {"story": STORY, "steps": 151}, 422, "steps", "150"),
        J("book-steps-huge", BOOKS, {"story": STORY, "steps": BIG}, 422, "steps", "150"),
        J("book-size-zero", BOOKS, {"story": STORY, "size": "0x0"}, 422, "size", "64"),
        J("book-size-13", BOOKS, {"story": STORY, "size": "13x13"}, 422, "size", "64"),
        J("book-size-odd", BOOKS, {"story": STORY, "size": "300x200"}, 422, "size", "multiple", "296x200"),
        J("book-size-million", BOOKS, {"story": STORY, "size": "1000000x1000000"}, 422, "size", "2048"),
        J("book-width-13", BOOKS, {"story": STORY, "width": 13}, 422, "width", "64"),
        J("book-height-huge", BOOKS, {"story": STORY, "height": 100000}, 422, "height", "2048"),
        J("book-candidates", BOOKS, {"story": STORY, "candidates": 100}, 422, "candidates", "8"),
        J("book-max-candidates", BOOKS, {"story": STORY, "candidates": 4, "max_candidates": 2}, 422, "max_candidates"),
        J("book-pages", BOOKS, {"story": STORY, "pages": 1000}, 422, "pages", "48"),
        J("book-auto-pages", BOOKS, {"story": "\n\n".join(["A fox ran."] * 60)}, 422, "pages", "48"),
        J("book-story-empty", BOOKS, {"story": ""}, 422, "story", "empty"),
        J("book-story-blank", BOOKS, {"story": "   \n\n  "}, 422, "story", "empty"),
        J("book-story-long", BOOKS, {"story": MB_TEXT}, 422, "story", "100000"),
        J("book-both", BOOKS, {"story": STORY, "keywords": "fox"}, 422, "story", "keywords"),
        J("book-neither", BOOKS, {}, 422, "story"),
        J("book-keywords-no-llm", BOOKS, {"keywords": "a fox"}, 422, "llm"),
        J("book-character", BOOKS, {"story": STORY, "characters": ["ghost"]}, 422, "ghost"),
        J("book-style-avatar", BOOKS, {"story": STORY, "style": "<be-style:nope>"}, 422, "<be-style:nope>"),
        J("book-style-long", BOOKS, {"story": STORY, "style": MB_TEXT}, 422, "style"),
        J("book-threshold-nan", BOOKS, '{"story": "A fox.", "threshold": NaN}', 422, "threshold"),
        J("book-weight-inf", BOOKS, '{"story": "A fox.", "clip_t_weight": Infinity}', 422, "clip_t_weight"),
        J("book-weights-zero", BOOKS, {"story": STORY, "clip_t_weight": 0, "clip_i_weight": 0}, 422, "clip_t_weight"),
        J("book-sampler", BOOKS, {"story": STORY, "sampler": "Warp Drive"}, 422, "Warp Drive"),
        J("book-model", BOOKS, {"story": STORY, "model": "nope"}, 404, "nope"),
        J("book-empty-body", BOOKS, "", 422, "body"),
        J("book-nested", BOOKS, NESTED_OBJ, 400, "body"),
        R("book-form", "POST", BOOKS, 415, "application/json", data={"story": "a"}),
        R("book-unknown", "GET", BOOKS + "/nope", 404, "nope"),
        R("book-export-unknown", "GET", BOOKS + "/nope/export.pdf", 404, "nope"),
        J("book-regen-unknown", BOOKS + "/nope/pages/1/regenerate", {"seed": 1}, 404, "nope"),
        J("book-regen-seed", BOOKS + "/nope/pages/1/regenerate", {"seed": BIG}, 422, "seed", "4294967295"),
        R("book-page-not-int", "GET", BOOKS + "/nope/pages/one/image", 422, "number"),
        J("char-seed-huge", CHARS, {"name": "kim", "seed": BIG}, 422, "seed", "4294967295"),
        J("char-seed-negative", CHARS, {"name": "kim", "seed": -5}, 422, "seed"),
        J("char-name-empty", CHARS, {"name": ""}, 422, "name"),
        J("char-name-bad", CHARS, {"name": "a b/c"}, 422, "name"),
        J("char-policy", CHARS, {"name": "kim", "seed_policy": "sometimes"}, 422, "seed_policy"),
        J("char-avatar-syntax", CHARS, {"name": "kim", "avatars": "<be-face:>"}, 422, "<be-face:>"),
        J("char-avatar-text", CHARS, {"name": "kim", "avatars": "red hair"}, 422, "avatars"),
        J("char-description-1mb", CHARS, {"name": "kim", "description": MB_TEXT}, 422, "description"),
        J("char-unknown-field", CHARS, {"name": "kim", "hair": "red"}, 422, "hair"),
        J("char-empty-body", CHARS, "", 422, "body"),
        J("char-nested", CHARS, NESTED_OBJ, 400, "body"),
        J("char-patch-unknown", CHARS + "/ghost", {"description": "x"}, 404, "ghost", method="PATCH"),
        R("char-get-unknown", "GET", CHARS + "/ghost", 404, "ghost"),
    ]


def _avatar_cases() -> list[Case]:
    face = ("files", ("face.png", SMALL_PNG, "image/png"))
    return [
        R("av-kind", "POST", AVATARS, 422, "kind", data={"kind": "hat", "name": "x"}, files=[face]),
        R("av-name-empty", "POST", AVATARS, 422, "name", data={"kind": "face", "name": ""}, files=[face]),
        R("av-name-bad", "POST", AVATARS, 422, "name", data={"kind": "face", "name": "../etc"}, files=[face]),
        R("av-no-files", "POST", AVATARS, 422, "file", data={"kind": "face", "name": "x"}),
        R(
            "av-not-image",
            "POST",
            AVATARS,
            422,
            "x.png",
            data={"kind": "face", "name": "x"},
            files=[("files", ("x.png", b"not an image"))],
        ),
        R(
            "av-huge",
            "POST",
            AVATARS,
            413,
            "big.png",
            "5000x5000",
            data={"kind": "face", "name": "x"},
            files=[("files", ("big.png", HUGE_PNG))],
        ),
        R(
            "av-pickle",
            "POST",
            AVATARS,
            422,
            "toy.ckpt",
            data={"kind": "lora", "name": "x"},
            files=[("files", ("toy.ckpt", b"\x80\x02pickle"))],
        ),
        R(
            "av-not-safetensors",
            "POST",
            AVATARS,
            422,
            "toy.safetensors",
            data={"kind": "lora", "name": "x"},
            files=[("files", ("toy.safetensors", b"not really"))],
        ),
        R("av-too-many", "POST", AVATARS, 422, "16", data={"kind": "face", "name": "x"}, files=[face] * 17),
        R("av-json", "POST", AVATARS, 415, "multipart/form-data", json={"kind": "face", "name": "x"}),
        R("av-get-unknown", "GET", AVATARS + "/face/ghost", 404, "ghost"),
        R("av-kind-unknown", "GET", AVATARS + "/hat/ghost", 4, "hat"),
        R("av-thumb-unknown", "GET", AVATARS + "/face/ghost/thumbnail", 404, "ghost"),
        J("av-patch-unknown", AVATARS + "/face/ghost", {"name": "x"}, 404, "ghost", method="PATCH"),
        R("av-delete-unknown", "DELETE", AVATARS + "/face/ghost", 404, "ghost"),
        R("keys-delete-unknown", "DELETE", "/v1/keys/nope", 404, "nope"),
        J("keys-first-remote", "/v1/keys", {"name": "k", "admin": True}, 403, "127.0.0.1", "pictale keys create"),
    ]


CASES = _a1111_cases() + _openai_cases() + _job_cases() + _story_cases() + _avatar_cases()

# Python's own words: what an unhandled exception would leak.
LEAKS = re.compile(
    r"Traceback|File \"|\b(RecursionError|ValueError|TypeError|KeyError|IndexError|AttributeError|"
    r"OverflowError|RuntimeError|JSONDecodeError|UnicodeDecodeError|ValidationError|AssertionError|"
    r"ZeroDivisionError|NotImplementedError|Exception|InvalidRequest|PictaleError|[A-Z][a-z]+[A-Za-z]*Error)\b"
)


def test_the_table_is_big_enough():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    # server exceptions become responses, as a real client sees them (a 500 fails the case, it does not raise)
    app = make_client(tmp_path_factory.mktemp("bad"), tiny_models).app
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(client, case: Case):
    r = client.request(case.method, case.path, **case.kw)
    text = r.text
    if case.status < 10:  # a status class: any 4xx
        assert r.status_code // 100 == case.status, (r.status_code, text[:500])
    else:
        assert r.status_code == case.status, (r.status_code, text[:500])
    lowered = text.lower()
    for needle in case.needles:
        assert needle.lower() in lowered, (needle, text[:500])
    assert not LEAKS.search(text), text[:500]
    assert len(text) < 5000, "the error echoes the input back"


def test_nothing_was_stored(client):
    """None of the bad requests above left an avatar, character, book or job behind."""
    assert client.get(AVATARS).json()["data"] == []
    assert client.get(CHARS).json()["data"] == []
    assert client.get(BOOKS).json()["data"] == []
    assert client.get(JOBS).json()["data"] == []
