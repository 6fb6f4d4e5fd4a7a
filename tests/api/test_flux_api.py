"""FLUX.1 through every dialect, on a stand-in engine (`flux_standin`): the variant's defaults (profiles), Forge's
`distilled_cfg_scale` field and `Distilled CFG Scale` infotext, sizes floored to multiples of 16, the T5 length
a job carries, model lists with variant and licence, and the 422s of bad guidance values."""

from __future__ import annotations

import base64
import json
import time

import pytest

from pictale.core.config import Settings
from pictale.core.errors import InvalidRequest
from pictale.core.types import GenerationSpec
from pictale.service.results import VERSION
from tests.api.flux_standin import flux_client

DEV_LICENCE = "FLUX.1 [dev] Non-Commercial License"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    client, engine, _ = flux_client(tmp_path_factory.mktemp("flux-api"))
    with client:
        yield client, engine


@pytest.fixture
def client(app):
    return app[0]


@pytest.fixture
def engine(app):
    return app[1]


def title(client, variant: str) -> str:
    return next(
        m["title"] for m in client.get("/sdapi/v1/sd-models").json() if m["model_name"] == f"tiny-flux-{variant}"
    )


def txt2img(client, **body):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "seed": 1, "width": 64, "height": 64, **body})
    assert r.status_code == 200, r.text
    return r.json(), json.loads(r.json()["info"])


def ran(engine) -> tuple:
    s = engine.specs[-1]
    return s.steps, s.sampler, s.cfg_scale, s.distilled_cfg_scale, s.t5_tokens, s.width, s.height


def test_a1111_txt2img_on_dev_runs_its_profile_and_writes_forge_infotext(client, engine):
    body, info = txt2img(client, width=72, height=100)
    assert ran(engine) == (28, "Euler", 1.0, 3.5, 512, 64, 96)
    model_hash = title(client, "dev").split("[")[1].rstrip("]")
    assert info["infotexts"][0] == (
        "a fox\nSteps: 28, Sampler: Euler, CFG scale: 1.0, Distilled CFG Scale: 3.5, Seed: 1, Size: 64x96, "
        f"Model hash: {model_hash}, Model: tiny-flux-dev, RNG: CPU, Version: {VERSION}"
    )
    assert (info["width"], info["height"], info["cfg_scale"], info["steps"]) == (64, 96, 1.0, 28)
    assert info["distilled_cfg_scale"] == 3.5 and info["extra_generation_params"] == {"Distilled CFG Scale": 3.5}
    # the echo: the request with A1111's defaults, and the distilled guidance that ran
    params = body["parameters"]
    assert (params["width"], params["steps"], params["cfg_scale"], params["distilled_cfg_scale"]) == (72, 50, 7.0, 3.5)


def test_what_the_client_sends_wins_and_cfg_above_1_stays_true_cfg(client, engine):
    body, info = txt2img(client, steps=6, cfg_scale=3.5, distilled_cfg_scale=5, negative_prompt="blurry")
    assert ran(engine) == (6, "Euler", 3.5, 5.0, 512, 64, 64)
    assert (
        "\nSteps: 6, Sampler: Euler, CFG scale: 3.5, Distilled CFG Scale: 5.0, Seed: 1, Size: 64x64,"
        in (info["infotexts"][0])
    )
    assert info["infotexts"][0].startswith("a fox\nNegative prompt: blurry\n")
    assert body["parameters"]["distilled_cfg_scale"] == 5.0 and info["distilled_cfg_scale"] == 5.0


def test_schnell_has_no_distilled_guidance_and_kontext_its_own(client, engine):
    schnell = {"override_settings": {"sd_model_checkpoint": title(client, "schnell")}}
    body, info = txt2img(client, distilled_cfg_scale=3, **schnell)
    assert ran(engine) == (4, "Euler", 1.0, None, 256, 64, 64)
    assert "Steps: 4, Sampler: Euler, CFG scale: 1.0, Seed: 1, Size: 64x64," in info["infotexts"][0]
    assert "Distilled" not in info["infotexts"][0] and info["distilled_cfg_scale"] is None
    assert body["parameters"]["distilled_cfg_scale"] == 3.0  # the echo of what was sent
    kontext = {"override_settings": {"sd_model_checkpoint": title(client, "kontext")}}
    _, info = txt2img(client, **kontext)
    assert ran(engine) == (28, "Euler", 1.0, 2.5, 512, 64, 64)
    assert "CFG scale: 1.0, Distilled CFG Scale: 2.5, Seed: 1," in info["infotexts"][0]


def test_other_families_ignore_distilled_guidance(client, engine):
    sd15 = {"override_settings": {"sd_model_checkpoint": "fake-sd15"}}
    body, info = txt2img(client, distilled_cfg_scale=3.5, **sd15)
    assert body["parameters"]["distilled_cfg_scale"] == 3.5  # the echo of what was sent
    s = engine.specs[-1]
    assert (s.steps, s.cfg_scale, s.t5_tokens) == (50, 7.0, None)  # A1111's defaults, no T5 length
    assert "Distilled" not in info["infotexts"][0] and info["distilled_cfg_scale"] is None
    assert "CFG scale: 7.0, Seed: 1, Size: 64x64," in info["infotexts"][0]


def test_img2img_and_png_info_read_it_back(client, engine):
    image = base64.b64encode(base64.b64decode(txt2img(client)[0]["images"][0])).decode()
    r = client.post("/sdapi/v1/img2img", json={"init_images": [image], "prompt": "a fox", "width": 88, "height": 88})
    assert r.status_code == 200, r.text
    assert ran(engine)[3:] == (3.5, 512, 80, 80)
    parsed = client.post("/sdapi/v1/png-info", json={"image": r.json()["images"][0]}).json()["parameters"]
    assert (parsed["Distilled CFG Scale"], parsed["CFG scale"], parsed["Size-1"], parsed["Steps"]) == (
        "3.5",
        "1.0",
        "80",
        "28",
    )


def wait_done(client, job_id: str) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


def test_job_api_defaults_floor_and_distilled_field(client, engine):
    r = client.post("/v1/jobs", json={"prompt": "a fox", "seed": 3, "response_format": "b64_json"})
    assert r.status_code == 202, r.text
    assert wait_done(client, r.json()["id"])["state"] == "done"
    assert ran(engine) == (28, "Euler", 1.0, 3.5, 512, 1024, 1024)  # FLUX.1's own size
    r = client.post("/v1/jobs", json={"prompt": "a fox", "width": 1000, "height": 520, "distilled_cfg_scale": 2})
    done = wait_done(client, r.json()["id"])
    assert ran(engine)[3:] == (2.0, 512, 992, 512)
    infotext = done["result"]["images"][0]["infotext"]
    assert "CFG scale: 1.0, Distilled CFG Scale: 2.0, Seed:" in infotext and "Size: 992x512," in infotext


def test_openai_auto_size_is_1024_and_sizes_floor_to_16(client, engine):
    r = client.post("/v1/images/generations", json={"prompt": "a fox", "size": "auto", "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    assert ran(engine) == (28, "Euler", 1.0, 3.5, 512, 1024, 1024)
    r = client.post("/v1/images/generations", json={"prompt": "a fox", "size": "1000x520", "stream": True})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [(e["type"], e["size"]) for e in events] == [("image_generation.completed", "992x512")]
    assert ran(engine)[3:] == (3.5, 512, 992, 512)


def test_imagine_carries_distilled_guidance(client, engine):
    chat = [{"role": "user", "content": "a fox in the snow"}]
    body = {"messages": chat, "mode": "raw_last", "width": 64, "height": 64}
    assert client.post("/v1/story/imagine", json={**body, "distilled_cfg_scale": 4.5}).status_code == 200
    assert ran(engine)[:4] == (28, "Euler", 1.0, 4.5)
    assert client.post("/v1/story/imagine", json=body).status_code == 200
    assert ran(engine)[3] == 3.5


def test_book_requests_keep_distilled_guidance(app, tmp_path):
    from pictale.api.native.story_schemas import BookRequest
    from pictale.service.profiles import profile_of_request
    from pictale.story.book_run import page_spec

    svc = app[0].app.state.service
    profile, entry = profile_of_request(svc)
    stored = BookRequest(story="A fox.", distilled_cfg_scale=4).to_request(profile, entry.family, limits=svc.settings)
    assert (stored["distilled_cfg_scale"], stored["steps"], stored["cfg_scale"], stored["width"]) == (
        4.0,
        28,
        1.0,
        1024,
    )
    assert page_spec(stored, "a fox", 1, 2).distilled_cfg_scale == 4.0
    default = BookRequest(story="A fox.").to_request(profile, entry.family, limits=svc.settings)
    assert default["distilled_cfg_scale"] == 3.5


def test_model_lists_show_variant_and_licence(client):
    # A1111's list keeps A1111's shape exactly; pictale's own model objects carry family, variant and licence
    a1111 = client.get("/sdapi/v1/sd-models").json()
    assert {frozenset(m) for m in a1111} == {frozenset({"title", "model_name", "hash", "sha256", "filename", "config"})}
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    facts = {name: (m["family"], m["variant"], m["license"]) for name, m in models.items()}
    assert facts == {
        "fake-sd15": ("sd15", None, None),
        "tiny-flux-schnell": ("flux", "schnell", "Apache-2.0"),
        "tiny-flux-dev": ("flux", "dev", DEV_LICENCE),
        "tiny-flux-kontext": ("flux", "kontext", DEV_LICENCE),
    }
    dev = client.get("/v1/models/tiny-flux-dev").json()
    assert (dev["id"], dev["object"], dev["owned_by"], dev["variant"], dev["license"]) == (
        "tiny-flux-dev", "model", "pictale", "dev", DEV_LICENCE
    )  # fmt: skip
    assert dev["profile"] == {"kind": "standard", "few_step": False, "sampler": "Euler", "scheduler": "automatic",
                              "steps": 28, "cfg_scale": 1.0, "size": None, "source": "files", "variant": "dev",
                              "distilled_cfg_scale": 3.5, "t5_tokens": 512}  # fmt: skip
    listed = {m["id"]: m["profile"]["distilled_cfg_scale"] for m in client.get("/v1/models").json()["data"]}
    assert listed == {"fake-sd15": None, "tiny-flux-schnell": None, "tiny-flux-dev": 3.5, "tiny-flux-kontext": 2.5}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"distilled_cfg_scale": NaN}', "Input should be a finite number"),
        ('{"distilled_cfg_scale": Infinity}', "Input should be a finite number"),
        ('{"distilled_cfg_scale": -0.5}', "Input should be greater than or equal to 0"),
        ('{"distilled_cfg_scale": 31}', "Input should be less than or equal to 30"),
        ('{"distilled_cfg_scale": "high"}', "Input should be a valid number, unable to parse string as a number"),
    ],
)
def test_bad_distilled_guidance_is_a_422_naming_the_field(client, body, message):
    headers = {"Content-Type": "application/json"}
    for path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "distilled_cfg_scale"]
        assert r.json()["detail"][0]["msg"] == message
    for path, extra in (("/v1/jobs", ""), ("/v1/story/imagine", '"messages": [{"role": "user", "content": "a"}], ')):
        r = client.post(path, content="{" + extra + body[1:], headers=headers)
        assert r.status_code == 422
        assert r.json()["error"]["message"] == f"distilled_cfg_scale: {message}"
        assert r.json()["error"]["param"] == "distilled_cfg_scale"


def test_the_service_checks_distilled_guidance_for_every_entry_point(app):
    svc = app[0].app.state.service
    for value, message in (
        (31.0, "distilled_cfg_scale must be from 0 to 30 (got 31)"),
        (-1.0, "distilled_cfg_scale must be from 0 to 30 (got -1)"),
        (float("nan"), "distilled_cfg_scale must be a finite number (got nan)"),
    ):
        with pytest.raises(InvalidRequest) as err:
            svc.normalize(GenerationSpec(distilled_cfg_scale=value))
        assert (err.value.message, err.value.param) == (message, "distilled_cfg_scale")


def test_cli_generate_takes_the_flux_profile_where_no_option_was_given(app):
    from pictale.cli.main import _with_profile

    svc = app[0].app.state.service
    spec = GenerationSpec(steps=20, sampler="Euler", cfg_scale=7.0, width=512, height=512)
    filled = _with_profile(svc, spec, steps=None, sampler=None, cfg=None)
    assert (filled.steps, filled.cfg_scale, filled.distilled_cfg_scale, filled.width) == (28, 1.0, 3.5, 512)
    kept = _with_profile(svc, GenerationSpec(steps=9, cfg_scale=2.0, distilled_cfg_scale=5.0), steps=9, sampler=None,
                         cfg=2.0)  # fmt: skip
    assert (kept.steps, kept.cfg_scale, kept.distilled_cfg_scale) == (9, 2.0, 5.0)


def test_settings_t5_max_tokens_reaches_flux_jobs(tmp_path):
    client, engine, _ = flux_client(tmp_path, t5_max_tokens=300)
    with client:
        assert "t5_max_tokens" in Settings(data_dir=tmp_path, t5_max_tokens=300).model_fields_set
        txt2img(client)
        assert ran(engine)[4] == 300
        txt2img(client, override_settings={"sd_model_checkpoint": title(client, "schnell")})
        assert ran(engine)[4] == 256  # schnell's limit
