"""img2img and inpainting through the A1111 route."""

from __future__ import annotations

import base64

from PIL import Image, ImageDraw

from tests.api.conftest import decode, info_of, png_b64

BASE = {"prompt": "a photo of a cat", "steps": 4, "width": 64, "height": 64, "seed": 3}


def _init() -> Image.Image:
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    ImageDraw.Draw(img).rectangle((10, 10, 40, 50), fill=(20, 200, 90))
    return img


def test_img2img_raw_base64_and_data_url_agree(client):
    raw = png_b64(_init())
    a = client.post("/sdapi/v1/img2img", json={**BASE, "init_images": [raw], "denoising_strength": 0.5})
    b = client.post(
        "/sdapi/v1/img2img",
        json={**BASE, "init_images": ["data:image/png;base64," + raw], "denoising_strength": 0.5},
    )
    assert a.status_code == 200 and b.status_code == 200
    assert a.json()["images"] == b.json()["images"]
    text = info_of(a)["infotexts"][0]
    assert "Denoising strength: 0.5" in text
    assert a.json()["parameters"]["init_images"] is None  # not echoed unless include_init_images


def test_denoising_strength_controls_change(client):
    init = _init()
    body = {**BASE, "init_images": [png_b64(init)]}
    zero = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.0})
    # nothing to denoise: the init image comes back as it was (the tiny VAE would blur it otherwise)
    assert decode(zero.json()["images"][0]).convert("RGB").tobytes() == init.tobytes()
    tiny = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.1})  # < 1 step of 4
    low = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.3})
    high = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.9})
    assert tiny.status_code == low.status_code == high.status_code == 200
    assert len({tiny.json()["images"][0], low.json()["images"][0], high.json()["images"][0]}) == 3


def test_resize_modes_give_requested_size(client):
    wide = Image.new("RGB", (128, 64), (10, 10, 200))
    for mode in (0, 1, 2, 3):
        r = client.post(
            "/sdapi/v1/img2img",
            json={**BASE, "init_images": [png_b64(wide)], "resize_mode": mode, "width": 64},
        )
        assert r.status_code == 200, r.text
        assert decode(r.json()["images"][0]).size == (64, 64)


def test_missing_init_images_is_404_like_a1111(client):
    r = client.post("/sdapi/v1/img2img", json=BASE)
    assert r.status_code == 404
    assert r.json() == {
        "error": "init_image_missing",
        "detail": "Init image not found",
        "body": "",
        "errors": "404: Init image not found",
    }


def test_bad_base64_image_is_422_naming_the_field(client):
    r = client.post("/sdapi/v1/img2img", json={**BASE, "init_images": ["bm90IGFuIGltYWdl"]})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("init_images[0]: not a decodable image")


def test_inpaint_keeps_unmasked_pixels(client):
    init = _init()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    r = client.post(
        "/sdapi/v1/img2img",
        json={
            **BASE,
            "init_images": [png_b64(init)],
            "mask": png_b64(mask),
            "mask_blur": 0,
            "inpainting_fill": 1,
            "inpaint_full_res": False,
            "denoising_strength": 0.9,
        },
    )
    assert r.status_code == 200, r.text
    out = decode(r.json()["images"][0]).convert("RGB")
    right = (40, 0, 64, 64)
    left = (0, 0, 24, 64)
    assert out.crop(right).tobytes() == init.crop(right).tobytes()
    assert out.crop(left).tobytes() != init.crop(left).tobytes()
    text = info_of(r)["infotexts"][0]
    assert "Mask blur: 0" in text and "Masked content: original" in text


def test_inpaint_only_masked_and_inverted_and_alpha_mask(client):
    init = _init()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 35, 35), fill=255)
    only = client.post(
        "/sdapi/v1/img2img",
        json={
            **BASE,
            "init_images": [png_b64(init)],
            "mask": png_b64(mask),
            "mask_blur": 0,
            "inpaint_full_res": True,
            "inpaint_full_res_padding": 4,
        },
    )
    assert only.status_code == 200
    out = decode(only.json()["images"][0]).convert("RGB")
    corner = (48, 48, 64, 64)
    assert out.crop(corner).tobytes() == init.crop(corner).tobytes()
    assert "Inpaint area: Only masked" in info_of(only)["infotexts"][0]
    inverted = client.post(
        "/sdapi/v1/img2img",
        json={
            **BASE,
            "init_images": [png_b64(init)],
            "mask": png_b64(mask),
            "mask_blur": 0,
            "inpaint_full_res": False,
            "inpainting_mask_invert": 1,
        },
    )
    inv = decode(inverted.json()["images"][0]).convert("RGB")
    centre = (22, 22, 34, 34)
    assert inv.crop(centre).tobytes() == init.crop(centre).tobytes()
    # RGBA mask with transparency: its alpha is the mask (opaque = repaint), as in A1111
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(rgba).rectangle((20, 20, 35, 35), fill=(0, 0, 0, 0))
    alpha = client.post(
        "/sdapi/v1/img2img",
        json={
            **BASE,
            "init_images": [png_b64(init)],
            "mask": png_b64(rgba),
            "mask_blur": 0,
            "inpaint_full_res": False,
        },
    )
    assert alpha.status_code == 200
    for fill in (0, 2, 3):
        r = client.post(
            "/sdapi/v1/img2img",
            json={**BASE, "init_images": [png_b64(init)], "mask": png_b64(mask), "inpainting_fill": fill},
        )
        assert r.status_code == 200


def test_more_init_images_than_batch_is_422(client):
    img = png_b64(_init())
    r = client.post("/sdapi/v1/img2img", json={**BASE, "init_images": [img, img], "batch_size": 1})
    assert r.status_code == 422
    assert "2 init images but batch_size is 1" in r.json()["detail"]
    ok = client.post("/sdapi/v1/img2img", json={**BASE, "init_images": [img, img], "batch_size": 2})
    assert ok.status_code == 200 and len(ok.json()["images"]) == 2
    assert base64.b64decode(ok.json()["images"][0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_inpaint_several_init_images_each_keeps_its_own_pixels(client):
    red, blue = Image.new("RGB", (64, 64), (200, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 200))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 20, 20), fill=255)
    r = client.post(
        "/sdapi/v1/img2img",
        json={
            **BASE,
            "init_images": [png_b64(red), png_b64(blue)],
            "mask": png_b64(mask),
            "batch_size": 2,
            "mask_blur": 0,
            "inpaint_full_res": False,
        },
    )
    assert r.status_code == 200, r.text
    outs = [decode(b).convert("RGB") for b in r.json()["images"]]
    keep = (32, 32, 64, 64)
    assert outs[0].crop(keep).tobytes() == red.crop(keep).tobytes()
    assert outs[1].crop(keep).tobytes() == blue.crop(keep).tobytes()
