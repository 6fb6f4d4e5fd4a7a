"""Options, model switching, list routes, png-info and auth."""

from __future__ import annotations

import base64

from tests.api.conftest import info_of, make_client

BASE = {"prompt": "a photo of a cat", "steps": 2, "width": 64, "height": 64, "seed": 7}


def test_options_has_the_keys_clients_read(client):
    opts = client.get("/sdapi/v1/options").json()
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    assert opts["sd_model_checkpoint"] in titles
    assert opts["sd_checkpoint_hash"] and len(opts["sd_checkpoint_hash"]) == 64
    assert opts["sd_vae"] == "Automatic"
    assert opts["CLIP_stop_at_last_layers"] == 1
    assert opts["samples_format"] == "png"
    assert "forge_preset" not in opts  # SillyTavern would switch to Forge semantics


def test_options_post_whole_dict_back(client):
    opts = client.get("/sdapi/v1/options").json()
    r = client.post("/sdapi/v1/options", json=opts)
    assert r.status_code == 200 and r.json() is None
    assert client.get("/sdapi/v1/options").json() == opts


def test_sd_models_shape(client):
    models = client.get("/sdapi/v1/sd-models").json()
    assert models
    for m in models:
        assert set(m) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    loaded = [m for m in models if m["title"] == client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]]
    assert "tiny" in loaded[0]["model_name"]
    assert loaded[0]["title"] == f"{loaded[0]['model_name']} [{loaded[0]['hash']}]"


def test_switch_checkpoint_via_options_and_override(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models) as c:
        first = c.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        sd15 = c.post("/sdapi/v1/txt2img", json=BASE)
        r = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": str(tiny_models["sdxl"])})
        assert r.status_code == 200
        now = c.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        assert now != first and "sdxl" in now
        assert now in [m["title"] for m in c.get("/sdapi/v1/sd-models").json()]
        xl = c.post("/sdapi/v1/txt2img", json=BASE)
        assert xl.status_code == 200
        assert info_of(xl)["sd_model_name"] != info_of(sd15)["sd_model_name"]
        assert xl.json()["images"][0] != sd15.json()["images"][0]
        # override_settings switches for one job and the option stays (restore afterwards is the default)
        over = c.post("/sdapi/v1/txt2img", json={**BASE, "override_settings": {"sd_model_checkpoint": first}})
        assert over.json()["images"][0] == sd15.json()["images"][0]
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == now
        again = c.post("/sdapi/v1/txt2img", json=BASE)
        assert again.json()["images"][0] == xl.json()["images"][0]
        # unknown checkpoint: a clear 404 naming it, nothing changed
        bad = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope.safetensors"})
        assert bad.status_code == 404
        assert "'nope.safetensors' not found" in bad.json()["detail"]
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == now


def test_single_file_checkpoint_in_models_dir(tmp_path, tiny_models):
    import shutil

    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    with make_client(tmp_path, tiny_models) as c:
        folder = c.post("/sdapi/v1/txt2img", json=BASE).json()["images"][0]
        shutil.copy(tiny_models["sd15_single"], ckpts / "tiny-single.safetensors")
        # a single file's config dir sits beside it (real SD 1.5/SDXL files use the packaged configs)
        shutil.copytree(tiny_models["sd15_config"], ckpts / "tiny-single.config")
        assert c.post("/sdapi/v1/refresh-checkpoints").status_code == 200
        titles = [m["title"] for m in c.get("/sdapi/v1/sd-models").json()]
        single = [t for t in titles if t.startswith("tiny-single.safetensors [")]
        assert single, titles
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": single[0]}).status_code == 200
        r = c.post("/sdapi/v1/txt2img", json=BASE)
        text = info_of(r)["infotexts"][0]
        assert "Model: tiny-single" in text
        # same weights as the folder: same pixels (the infotext differs in the model name)
        from tests.api.conftest import decode

        assert decode(r.json()["images"][0]).tobytes() == decode(folder).tobytes()


def test_pickle_checkpoint_is_refused(client, tmp_path):
    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": str(ckpt)})
    assert r.status_code == 422
    assert "evil.ckpt" in r.json()["detail"]


def test_list_routes_shapes(client):
    samplers = client.get("/sdapi/v1/samplers").json()
    euler_a = next(s for s in samplers if s["name"] == "Euler a")
    assert set(euler_a) == {"name", "aliases", "options"} and "k_euler_a" in euler_a["aliases"]
    schedulers = client.get("/sdapi/v1/schedulers").json()
    karras = next(s for s in schedulers if s["name"] == "karras")
    assert karras["label"] == "Karras"
    assert set(karras) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
    ups = client.get("/sdapi/v1/upscalers").json()
    assert ups[0] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}
    assert client.get("/sdapi/v1/latent-upscale-modes").json()[0] == {"name": "Latent"}
    assert client.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    for route in ("sd-vae", "hypernetworks", "face-restorers", "realesrgan-models", "loras", "prompt-styles"):
        assert client.get(f"/sdapi/v1/{route}").json() == [], route
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    mem = client.get("/sdapi/v1/memory").json()
    assert set(mem) == {"ram", "cuda"} and mem["ram"]["total"] > 0


def test_loras_lists_safetensors_metadata(client):
    import numpy as np
    from safetensors.numpy import save_file

    lora_dir = client.app.state.settings.loras_path
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {"w": np.zeros((1,), dtype=np.float32)},
        str(lora_dir / "toy.safetensors"),
        metadata={"ss_output_name": "toy_v1"},
    )
    (lora_dir / "old.pt").write_bytes(b"x")
    try:
        loras = client.get("/sdapi/v1/loras").json()
        assert loras == [
            {
                "name": "toy",
                "alias": "toy_v1",
                "path": str(lora_dir / "toy.safetensors"),
                "metadata": {"ss_output_name": "toy_v1"},
            }
        ]
    finally:
        (lora_dir / "toy.safetensors").unlink()
        (lora_dir / "old.pt").unlink()


def test_png_info_reads_our_images(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "negative_prompt": "ugly"})
    b64 = r.json()["images"][0]
    info = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + b64}).json()
    assert info["info"] == info_of(r)["infotexts"][0]
    p = info["parameters"]
    assert p["Prompt"] == "a photo of a cat" and p["Negative prompt"] == "ugly"
    assert p["Steps"] == "2" and p["Seed"] == "7" and p["Size-1"] == "64" and p["Size-2"] == "64"
    assert client.post("/sdapi/v1/png-info", json={"image": ""}).json() == {
        "info": "",
        "items": {},
        "parameters": {},
    }
    bad = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"garbage").decode()})
    assert bad.status_code == 422


def test_cmd_flags_never_leak_credentials(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models, api_auth="alice:s3cret") as c:
        flags = c.get("/sdapi/v1/cmd-flags", auth=("alice", "s3cret")).json()
        assert "s3cret" not in str(flags)
        assert flags["api_auth"] is None


def test_basic_auth(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models, api_auth="alice:s3cret,bob:pw") as c:
        r = c.get("/sdapi/v1/options")
        assert r.status_code == 401 and r.json()["detail"] == "Not authenticated"
        assert r.headers["www-authenticate"].startswith("Basic")
        assert c.get("/sdapi/v1/options", auth=("alice", "wrong")).status_code == 401
        assert c.get("/sdapi/v1/options", auth=("eve", "s3cret")).status_code == 401
        assert c.get("/sdapi/v1/options", auth=("alice", "s3cret")).status_code == 200
        assert c.get("/sdapi/v1/progress", auth=("bob", "pw")).status_code == 200
        assert c.post("/sdapi/v1/txt2img", json=BASE).status_code == 401


def test_empty_authorization_header_is_fine_when_auth_is_off(client):
    assert client.get("/sdapi/v1/options", headers={"Authorization": ""}).status_code == 200
    assert client.get("/sdapi/v1/options", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_cors(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models, cors_allow_origins="http://localhost:8000") as c:
        r = c.options(
            "/sdapi/v1/txt2img",
            headers={"Origin": "http://localhost:8000", "Access-Control-Request-Method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "http://localhost:8000"
    with make_client(tmp_path, tiny_models) as c:
        r = c.get("/sdapi/v1/options", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
