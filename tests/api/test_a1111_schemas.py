"""The A1111 wire schema and its translation to a GenerationSpec, on their own (no model)."""

from __future__ import annotations

import pytest

from pictale.api.a1111.schemas import Img2ImgRequest, Txt2ImgRequest
from pictale.core.errors import InitImageMissing, InvalidImage, ScriptNotFound
from pictale.core.types import Mode
from tests.api.conftest import png_b64

OPTS = {"CLIP_stop_at_last_layers": 1}


def test_defaults_are_a1111_api_defaults():
    spec = Txt2ImgRequest().to_spec(OPTS)
    assert (spec.steps, spec.sampler, spec.width, spec.height, spec.cfg_scale) == (50, "Euler", 512, 512, 7.0)
    assert spec.seed == -1 and spec.batch_size == 1 and spec.n_iter == 1 and spec.mode is Mode.TXT2IMG


def test_sampler_index_fallback_and_combined_names():
    assert Txt2ImgRequest(sampler_index="Euler a").to_spec(OPTS).sampler == "Euler a"
    spec = Txt2ImgRequest(sampler_name="Euler Karras", sampler_index="Euler a").to_spec(OPTS)
    assert (spec.sampler, spec.scheduler) == ("Euler", "karras")
    spec = Txt2ImgRequest(sampler_name="Euler", scheduler="Karras").to_spec(OPTS)
    assert spec.scheduler == "karras"
    # Karras is DPM++ 2M's own default, so A1111 resets it to Automatic
    spec = Txt2ImgRequest(sampler_name="DPM++ 2M Karras").to_spec(OPTS)
    assert (spec.sampler, spec.scheduler) == ("DPM++ 2M", "automatic")
    spec = Txt2ImgRequest(sampler_name="Euler", scheduler="sgm_uniform").to_spec(OPTS)
    assert spec.scheduler == "sgm_uniform"


def test_overrides_map_to_spec():
    req = Txt2ImgRequest.model_validate(
        {"override_settings": {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "m [abc]"}}
    )
    spec = req.to_spec(OPTS)
    assert spec.clip_skip == 2 and spec.model == "m [abc]"
    assert Txt2ImgRequest().to_spec({"CLIP_stop_at_last_layers": 3}).clip_skip == 3


def test_unknown_keys_ignored_and_echo_filled():
    req = Txt2ImgRequest.model_validate({"prompt": "a", "url": "x", "hr_additional_modules": []})
    echo = req.filled()
    assert echo["prompt"] == "a" and echo["steps"] == 50 and echo["hr_scale"] == 2.0
    assert "url" not in echo


def test_scripts():
    with pytest.raises(ScriptNotFound, match="always on script controlnet not found"):
        Txt2ImgRequest(alwayson_scripts={"controlnet": {"args": []}}).to_spec(OPTS)
    with pytest.raises(ScriptNotFound, match="Selectable script not found: x/y/z plot"):
        Txt2ImgRequest(script_name="x/y/z plot").to_spec(OPTS)


def test_img2img_translation():
    from PIL import Image

    img = Image.new("RGB", (32, 16), (1, 2, 3))
    req = Img2ImgRequest(
        init_images=[png_b64(img)],
        mask=png_b64(img.convert("L")),
        mask_blur=2,
        inpainting_mask_invert=1,
        resize_mode=2,
        denoising_strength=0.3,
    )
    spec = req.to_spec(OPTS, max_pixels=10_000)
    assert spec.mode is Mode.INPAINT and spec.init_images[0].size == (32, 16)
    assert spec.mask_blur == 2 and spec.inpainting_mask_invert and spec.resize_mode == 2
    assert spec.denoising_strength == 0.3
    with pytest.raises(InitImageMissing):
        Img2ImgRequest().to_spec(OPTS, max_pixels=10)
    with pytest.raises(InvalidImage, match=r"init_images\[0\]: image is 32x16, more than the limit of 100 pixels"):
        Img2ImgRequest(init_images=[png_b64(img)]).to_spec(OPTS, max_pixels=100)
