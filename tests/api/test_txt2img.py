"""txt2img through the real HTTP stack on the tiny SD 1.5 model."""

from __future__ import annotations

import base64
import io

from PIL import Image

from tests.api.conftest import decode, info_of

BASE = {"prompt": "a photo of a cat", "steps": 2, "width": 64, "height": 64, "seed": 7}


def test_response_shape_and_defaults(client):
    r = client.post("/sdapi/v1/txt2img", json=BASE)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert isinstance(body["info"], str)
    assert len(body["images"]) == 1
    assert not body["images"][0].startswith("data:")
    img = decode(body["images"][0])
    assert img.format == "PNG" and img.size == (64, 64)
    params = body["parameters"]
    # the echo has every default filled in, as A1111's
    assert params["steps"] == 2 and params["cfg_scale"] == 7.0 and params["sampler_index"] == "Euler"
    assert params["batch_size"] == 1 and params["n_iter"] == 1 and params["seed"] == 7
    assert params["enable_hr"] is False and params["denoising_strength"] == 0.75
    info = info_of(r)
    for key in (
        "prompt",
        "all_prompts",
        "negative_prompt",
        "all_negative_prompts",
        "seed",
        "all_seeds",
        "subseed",
        "all_subseeds",
        "subseed_strength",
        "width",
        "height",
        "sampler_name",
        "cfg_scale",
        "steps",
        "batch_size",
        "restore_faces",
        "sd_model_name",
        "sd_model_hash",
        "seed_resize_from_w",
        "seed_resize_from_h",
        "extra_generation_params",
        "index_of_first_image",
        "infotexts",
        "styles",
        "job_timestamp",
        "clip_skip",
        "version",
    ):
        assert key in info, key
    assert info["seed"] == 7 and info["all_seeds"] == [7]
    assert info["sampler_name"] == "Euler"
    assert info["index_of_first_image"] == 0


def test_infotext_in_png_chunk_matches_info(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "negative_prompt": "blurry", "cfg_scale": 5})
    img = decode(r.json()["images"][0])
    text = img.info["parameters"]
    assert text == info_of(r)["infotexts"][0]
    lines = text.split("\n")
    assert lines[0] == "a photo of a cat"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 2, Sampler: Euler, CFG scale: 5.0, Seed: 7, Size: 64x64, Model hash: ")
    assert "Model: tiny-sd15" in lines[2]


def test_api_defaults_when_fields_absent_or_null(client):
    r = client.post(
        "/sdapi/v1/txt2img",
        json={
            "prompt": "x",
            "steps": 2,
            "width": 64,
            "height": 64,
            "seed": None,
            "sampler_name": None,
            "cfg_scale": None,
        },
    )
    assert r.status_code == 200
    info = info_of(r)
    assert info["sampler_name"] == "Euler" and info["cfg_scale"] == 7.0
    assert 0 <= info["seed"] <= 4294967294
    assert r.json()["parameters"]["seed"] == -1


def test_unknown_fields_are_ignored(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "url": "http://x", "auth": "a:b", "clip_skip": 1, "foo": [1]})
    assert r.status_code == 200


def test_seed_plus_i_and_batch_identity(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "seed": 100, "batch_size": 2, "n_iter": 2})
    assert r.status_code == 200
    info = info_of(r)
    assert info["all_seeds"] == [100, 101, 102, 103]
    images = r.json()["images"]
    assert len(images) == 4
    # image 3 of the batch is bit-identical to a lone request with its seed (infotext included)
    alone = client.post("/sdapi/v1/txt2img", json={**BASE, "seed": 103}).json()["images"][0]
    assert base64.b64decode(images[3]) == base64.b64decode(alone)
    assert base64.b64decode(images[0]) != base64.b64decode(alone)


def test_same_seed_same_bytes_and_random_seed(client):
    a = client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
    b = client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
    assert a == b
    r1 = info_of(client.post("/sdapi/v1/txt2img", json={**BASE, "seed": -1}))
    r2 = info_of(client.post("/sdapi/v1/txt2img", json={**BASE, "seed": -1}))
    assert r1["seed"] != r2["seed"]


def test_size_floored_to_multiple_of_8(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "width": 70, "height": 77})
    assert r.status_code == 200
    assert decode(r.json()["images"][0]).size == (64, 72)
    assert "Size: 64x72" in info_of(r)["infotexts"][0]


def test_size_above_maximum_is_422(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "width": 4096})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_request"
    assert body["detail"] == "width 4096 is above the maximum of 2048 (set --max-width)"


def test_type_error_is_fastapi_422(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "steps": "many"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "steps"]


def test_sampler_swap_does_not_leak(client):
    euler = client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
    karras = client.post("/sdapi/v1/txt2img", json={**BASE, "sampler_name": "DPM++ 2M Karras"})
    assert karras.status_code == 200
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in info_of(karras)["infotexts"][0]
    assert karras.json()["images"][0] != euler
    again = client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
    assert again == euler


def test_every_listed_sampler_runs(client):
    names = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    for required in (
        "Euler",
        "Euler a",
        "DPM++ 2M",
        "DPM++ 2M SDE",
        "DPM++ SDE",
        "DDIM",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "UniPC",
        "LCM",
        "PLMS",
    ):
        assert required in names
    for name in names:
        r = client.post("/sdapi/v1/txt2img", json={**BASE, "sampler_name": name, "steps": 3})
        assert r.status_code == 200, (name, r.text)
        assert info_of(r)["sampler_name"] == name


def test_unknown_sampler_falls_back_like_a1111(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "sampler_name": "no such sampler"})
    assert r.status_code == 200
    assert info_of(r)["sampler_name"] == "DPM++ 2M"


def test_clip_skip_tiling_negative_and_cfg_change_the_image(client):
    base = client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
    skip = client.post("/sdapi/v1/txt2img", json={**BASE, "override_settings": {"CLIP_stop_at_last_layers": 2}})
    assert "Clip skip: 2" in info_of(skip)["infotexts"][0]
    tiled = client.post("/sdapi/v1/txt2img", json={**BASE, "tiling": True})
    assert "Tiling: True" in info_of(tiled)["infotexts"][0]
    neg = client.post("/sdapi/v1/txt2img", json={**BASE, "negative_prompt": "dog"}).json()["images"][0]
    cfg = client.post("/sdapi/v1/txt2img", json={**BASE, "cfg_scale": 2}).json()["images"][0]
    images = {base, skip.json()["images"][0], tiled.json()["images"][0], neg, cfg}
    assert len(images) == 5
    # tiling is switched off again for the next request
    assert client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0] == base


def test_long_prompt_is_not_truncated(client):
    filler = ", ".join(["a photo of a cat"] * 30)
    a = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": filler + ", red"}).json()["images"][0]
    b = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": filler + ", blue dog"}).json()["images"][0]
    assert a != b


def test_attention_syntax_changes_the_image(client):
    plain = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "a photo of a cat"}).json()["images"][0]
    one = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "a photo of a (cat:1.0)"}).json()
    heavy = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "a photo of a (cat:1.6)"}).json()
    assert decode(one["images"][0]).tobytes() == decode(plain).tobytes()
    assert decode(heavy["images"][0]).tobytes() != decode(plain).tobytes()


def test_send_images_false(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "send_images": False})
    assert r.json()["images"] == []


def test_unknown_alwayson_script_is_422(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "alwayson_scripts": {"ADetailer": {"args": [True]}}})
    assert r.status_code == 422
    assert r.json()["detail"] == "always on script ADetailer not found"
    # an empty dict, as webuiapi sends, is fine
    assert client.post("/sdapi/v1/txt2img", json={**BASE, "alwayson_scripts": {}}).status_code == 200


def test_styles_are_applied(client, tmp_path):
    svc = client.app.state.service
    svc.styles.path.write_text("name,prompt,negative_prompt\nnoir,{prompt} in black and white,color\n")
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "styles": ["noir", "unknown"]})
    text = info_of(r)["infotexts"][0]
    assert text.startswith("a photo of a cat in black and white\nNegative prompt: color\n")
    styles = client.get("/sdapi/v1/prompt-styles").json()
    assert styles == [{"name": "noir", "prompt": "{prompt} in black and white", "negative_prompt": "color"}]
    svc.styles.path.unlink()


def test_prompt_list_per_image(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": ["a cat", "a dog"], "batch_size": 2})
    info = info_of(r)
    assert info["all_prompts"] == ["a cat", "a dog"]
    assert info["infotexts"][1].startswith("a dog\n")


def test_jpeg_samples_format(client):
    client.post("/sdapi/v1/options", json={"samples_format": "jpg"})
    try:
        r = client.post("/sdapi/v1/txt2img", json=BASE)
        img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
        assert img.format == "JPEG"
    finally:
        client.post("/sdapi/v1/options", json={"samples_format": "png"})


def test_hires_fix_latent_and_pixel_upscalers(client):
    body = {**BASE, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "hr_second_pass_steps": 2}
    latent = client.post("/sdapi/v1/txt2img", json=body)
    assert latent.status_code == 200, latent.text
    assert decode(latent.json()["images"][0]).size == (128, 128)
    text = info_of(latent)["infotexts"][0]
    assert "Size: 64x64" in text  # A1111 writes the first-pass size
    assert "Denoising strength: 0.5" in text and "Hires upscale: 2" in text
    assert "Hires steps: 2" in text and "Hires upscaler: Latent" in text
    lanczos = client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "Lanczos"})
    assert decode(lanczos.json()["images"][0]).size == (128, 128)
    assert lanczos.json()["images"][0] != latent.json()["images"][0]
    resized = client.post("/sdapi/v1/txt2img", json={**body, "hr_resize_x": 96, "hr_resize_y": 0})
    assert decode(resized.json()["images"][0]).size == (96, 96)
    assert "Hires resize: 96x96" in info_of(resized)["infotexts"][0]
    # enable_hr false (what webuiapi and SillyTavern send by default) is a plain txt2img
    plain = client.post("/sdapi/v1/txt2img", json={**BASE, "enable_hr": False, "hr_scale": 2})
    assert decode(plain.json()["images"][0]).size == (64, 64)


def test_hires_fix_errors_name_the_field(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"})
    assert r.status_code == 422 and "hr_upscaler 'R-ESRGAN 4x+' is not available" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "enable_hr": True, "hr_scale": 64})
    assert r.status_code == 422 and "hires size 4096x4096" in r.json()["detail"]


def test_hires_progress_counts_two_passes(client):
    import threading
    import time

    box = {}
    body = {**BASE, "steps": 150, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 1.0}
    t = threading.Thread(target=lambda: box.setdefault("r", client.post("/sdapi/v1/txt2img", json=body)))
    t.start()
    seen = set()
    deadline = time.time() + 60
    while t.is_alive() and time.time() < deadline:
        p = client.get("/sdapi/v1/progress").json()
        if p["state"]["job_count"]:
            seen.add((p["state"]["job_count"], p["state"]["job_no"]))
        time.sleep(0.005)
    t.join()
    assert box["r"].status_code == 200
    assert (2, 0) in seen and (2, 1) in seen


def test_extra_network_tags_stay_in_infotext_but_not_in_the_encoding(client):
    plain = client.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
    tagged = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "a photo of a cat <hypernet:none:1>"})
    assert info_of(tagged)["infotexts"][0].startswith("a photo of a cat <hypernet:none:1>\n")
    assert decode(tagged.json()["images"][0]).tobytes() == decode(plain).tobytes()


def test_few_step_model_gets_its_defaults_on_the_a1111_route(tmp_path, tiny_models):
    import json
    import shutil

    from tests.api.conftest import make_client

    folder = tmp_path / "tiny-lcm"
    shutil.copytree(tiny_models["sd15"], folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "LCMScheduler"}))
    with make_client(tmp_path / "data", {"sd15": folder}) as c:
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 1, "width": 64, "height": 64})
        assert "Steps: 4, Sampler: LCM, CFG scale: 1.5" in info_of(r)["infotexts"][0]
        # what the client sends wins (webuiapi always sends steps and a sampler)
        r = c.post("/sdapi/v1/txt2img", json={**BASE, "sampler_name": "Euler a", "cfg_scale": 5})
        assert "Steps: 2, Sampler: Euler a, CFG scale: 5.0" in info_of(r)["infotexts"][0]
