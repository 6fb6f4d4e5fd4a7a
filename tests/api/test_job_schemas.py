"""pictale's own job schema and its to_spec(), on their own (no server)."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from pictale.api.native.job_schemas import JobRequest
from pictale.core.errors import InvalidImage, InvalidRequest
from pictale.core.types import Mode
from pictale.service.profiles import default_profile
from tests.api.conftest import png_b64


def test_defaults_of_a_standard_model():
    spec = JobRequest(prompt="a cat").to_spec()
    assert (spec.sampler, spec.scheduler, spec.steps, spec.cfg_scale) == ("DPM++ 2M", "automatic", 20, 7.0)
    assert (spec.width, spec.height, spec.seed, spec.batch_size, spec.n_iter) == (512, 512, -1, 1, 1)
    assert spec.clip_skip == 1 and spec.mode is Mode.TXT2IMG and spec.hires is None
    sdxl = JobRequest().to_spec(family="sdxl")
    assert (sdxl.width, sdxl.height) == (1024, 1024)
    assert JobRequest().to_spec(options={"CLIP_stop_at_last_layers": 2}).clip_skip == 2


def test_few_step_profile_fills_only_unset_fields():
    turbo = default_profile("turbo")
    spec = JobRequest(prompt="x").to_spec(turbo, family="sdxl")
    assert (spec.sampler, spec.scheduler, spec.steps, spec.cfg_scale, spec.width) == (
        "Euler a",
        "sgm_uniform",
        1,
        1.0,
        512,
    )
    spec = JobRequest(steps=3, cfg_scale=0, width=768).to_spec(turbo, family="sdxl")
    assert (spec.steps, spec.cfg_scale, spec.width, spec.height) == (3, 0.0, 768, 512)
    # another sampler keeps the profile's trailing timesteps when it can follow them...
    assert JobRequest(sampler="Euler").to_spec(turbo).scheduler == "sgm_uniform"
    # ...and quietly drops them when it cannot
    assert JobRequest(sampler="LCM").to_spec(turbo).scheduler == "automatic"
    # a schedule in the sampler name is the client's choice
    spec = JobRequest(sampler="Euler Karras").to_spec(default_profile("lightning"))
    assert (spec.sampler, spec.scheduler, spec.steps) == ("Euler", "karras", 4)


def test_sampler_names():
    assert JobRequest(sampler="DPM++ 2M Karras").to_spec().scheduler == "automatic"  # Karras is its own
    spec = JobRequest(sampler="k_euler_a", scheduler="SGM Uniform").to_spec()
    assert (spec.sampler, spec.scheduler) == ("Euler a", "sgm_uniform")
    with pytest.raises(InvalidRequest, match="unknown sampler 'Eulr'") as err:
        JobRequest(sampler="Eulr").to_spec()
    assert err.value.param == "sampler"
    with pytest.raises(InvalidRequest, match="unknown schedule type 'fast'") as err:
        JobRequest(scheduler="fast").to_spec()
    assert err.value.param == "scheduler"
    with pytest.raises(InvalidRequest, match="'karras' is not available for the LCM sampler") as err:
        JobRequest(sampler="LCM", scheduler="karras").to_spec()
    assert err.value.param == "scheduler"


def test_strict_fields_and_ranges():
    with pytest.raises(ValidationError) as err:
        JobRequest.model_validate({"prompt": "x", "step": 4, "cfg": 2})
    assert {e["loc"][0] for e in err.value.errors()} == {"step", "cfg"}
    assert {e["type"] for e in err.value.errors()} == {"extra_forbidden"}
    for bad in ({"steps": 0}, {"denoising_strength": 1.5}, {"clip_skip": 13}, {"cfg_scale": float("nan")}):
        with pytest.raises(ValidationError):
            JobRequest.model_validate(bad)
    with pytest.raises(
        InvalidRequest, match=r"seed must be a whole number from -1 \(random\) to 4294967295 \(got -2\)"
    ):
        JobRequest.model_validate({"seed": -2})
    with pytest.raises(ValidationError, match="extra_forbidden"):
        JobRequest.model_validate({"hires": {"scale": 2, "steps": 3}})
    with pytest.raises(ValidationError, match="upscaler 'ESRGAN'"):
        JobRequest.model_validate({"hires": {"upscaler": "ESRGAN"}})
    with pytest.raises(ValidationError, match="response_format"):
        JobRequest.model_validate({"response_format": "png"})


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "localhost:8000/hook", "http://"])
def test_callback_url_must_be_http(url):
    with pytest.raises(ValidationError, match="callback_url must be an absolute http"):
        JobRequest(callback_url=url)


def test_delivery_fields():
    req = JobRequest(session=" chat-1 ", callback_url="http://127.0.0.1:9/hook", previews=False)
    assert req.session == "chat-1" and req.callback_url == "http://127.0.0.1:9/hook" and req.previews is False
    assert JobRequest().response_format == "url" and JobRequest().previews is True


def test_img2img_inpaint_and_hires():
    red = png_b64(Image.new("RGB", (64, 64), (255, 0, 0)))
    mask = "data:image/png;base64," + png_b64(Image.new("L", (64, 64), 255))
    spec = JobRequest(init_images=[red], mask=mask, denoising_strength=0.4, inpainting_fill=2).to_spec()
    assert spec.mode is Mode.INPAINT and spec.denoising_strength == 0.4 and spec.inpainting_fill == 2
    assert spec.init_images[0].size == (64, 64) and spec.inpaint_full_res_padding == 32
    with pytest.raises(InvalidImage) as err:
        JobRequest(init_images=[red, "not base64!"]).to_spec()
    assert err.value.param == "init_images[1]"
    with pytest.raises(InvalidRequest, match="mask needs init_images"):
        JobRequest(mask=mask).to_spec()
    spec = JobRequest(steps=3, hires={"scale": 1.5, "denoising_strength": 0.5, "sampler": "Euler"}).to_spec()
    h = spec.hires
    assert (h.scale, h.upscaler, h.denoising_strength, h.sampler, h.scheduler) == (
        1.5,
        "Latent",
        0.5,
        "Euler",
        "automatic",
    )
    assert spec.denoising_strength == 0.5  # txt2img: the infotext's denoising strength is the hires pass's
    assert JobRequest(hires={}).to_spec().hires.sampler is None
    with pytest.raises(InvalidRequest) as err:
        JobRequest(hires={"sampler": "LCM", "scheduler": "karras"}).to_spec()
    assert err.value.param == "hires.scheduler"
