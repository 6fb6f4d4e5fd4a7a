"""Face and style avatars on SD3 through diffusers' SD3 IP-Adapter: the tiny InstantX-format adapter, scales,
weight 0 and later jobs bit-identical to no IP-Adapter, embeddings, the one-avatar limit and missing files."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from PIL import Image
from safetensors.torch import load_file

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef, GenerationSpec, HiresSpec
from pictale.engine import models
from pictale.engine.engine import Engine
from pictale.engine.families.support import check_avatars, check_ip_adapter_files
from pictale.engine.tiny.sd3_adapters import instantx_key


def _noise_image(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd3-avatar-files")
    out = {}
    for seed, name in enumerate(("lucy", "lucy2", "cartoon"), start=1):
        out[name] = folder / f"{name}.png"
        _noise_image(seed).save(out[name])
    return out


def _engine(tiny_models, ip_adapter_path="tiny") -> Engine:
    path = tiny_models["ip_adapter"] if ip_adapter_path == "tiny" else ip_adapter_path
    engine = Engine(device="cpu", dtype="float32", ip_adapter_path=path)
    engine.load(models.resolve_model(str(tiny_models["sd3"]), tiny_models["sd3"].parent))
    return engine


@pytest.fixture(scope="module")
def sd3(tiny_models):
    return _engine(tiny_models)


def avatar(files, name="lucy", weight=0.6, kind=AvatarKind.FACE, images=None) -> AvatarRef:
    images = images or [name]
    paths = tuple(files[i] for i in images)
    return AvatarRef(kind, name, weight, paths, digest=f"d-{'+'.join(images)}")


def style(files, name="cartoon", weight=0.6) -> AvatarRef:
    return avatar(files, name, weight, AvatarKind.STYLE)


def run(engine, avatars=(), seed=1, batch=1, **kw) -> np.ndarray:
    kw = {"steps": 2, "width": 64, "height": 64, **kw}
    spec = GenerationSpec(prompt="a photo of a cat", batch_size=batch, avatars=tuple(avatars), **kw)
    seeds = [seed + i for i in range(batch)]
    init = list(spec.init_images) * batch if spec.init_images else None
    masks = [spec.mask] * batch if spec.mask is not None else None
    out = engine.generate(spec, [spec.prompt] * batch, [""] * batch, seeds, [0] * batch, None, init, masks)
    return np.stack([np.asarray(img.convert("RGB")).astype(np.int16) for img in out.images])


def same(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def diff(a, b) -> float:
    return float(np.abs(a - b).mean())


def _plain_processors(engine) -> bool:
    procs = engine._pipe.transformer.attn_processors.values()
    return all(type(p).__name__ == "JointAttnProcessor2_0" for p in procs)


def test_the_tiny_adapter_has_the_instantx_keys_diffusers_loads(sd3, files, tiny_models):
    state = load_file(str(tiny_models["ip_adapter_sd3"] / "ip-adapter.safetensors"))
    assert "image_proj.layers.0.0.to_q.weight" in state and "image_proj.layers.3.2.1.weight" in state  # InstantX
    assert "ip_adapter.1.norm_ip.linear.weight" in state
    run(sd3, [avatar(files)])
    transformer = sd3._pipe.transformer
    loaded = {f"image_proj.{instantx_key(k)}": v for k, v in transformer.image_proj.state_dict().items()}
    procs = [p for p in transformer.attn_processors.values() if type(p).__name__.startswith("SD3IPAdapter")]
    assert len(procs) == transformer.config.num_layers == 2
    for i, proc in enumerate(procs):
        loaded.update({f"ip_adapter.{i}.{k}": v for k, v in proc.state_dict().items()})
    assert set(loaded) == set(state)  # every key of the file is used, none is missing
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_face_changes_the_image_and_parks_between_jobs(sd3, files, monkeypatch):
    base = run(sd3)
    one = run(sd3, [avatar(files)])
    assert diff(one, base) > 0.5
    assert sd3._adapters.sd3_ip.attached
    assert same(run(sd3), base)  # a job without face/style runs on the transformer's own processors
    assert _plain_processors(sd3) and sd3._pipe.transformer.image_proj is None
    loads = []
    real = type(sd3._pipe).load_ip_adapter
    monkeypatch.setattr(type(sd3._pipe), "load_ip_adapter", lambda *a, **k: loads.append(1) or real(*a, **k))
    assert same(run(sd3, [avatar(files)]), one)  # re-attached, not reloaded
    assert loads == []


def test_weight_zero_and_jobs_after_an_ip_job_equal_the_first_plain_image(tiny_models, files):
    engine = _engine(tiny_models)  # a fresh engine: nothing has been loaded on it yet
    first = run(engine)
    assert same(run(engine, [avatar(files, weight=0.0)]), first)
    assert engine._adapters.sd3_ip.loads == 0  # weight 0: the adapter is not even loaded
    assert diff(run(engine, [avatar(files, weight=0.8)]), first) > 0.5
    assert same(run(engine), first)
    assert same(run(engine, [avatar(files, weight=0.0)]), first)
    assert same(run(engine, [style(files, weight=0.0), avatar(files, "lucy2", 0.0)]), first)


def test_the_scale_is_the_token_weight(sd3, files):
    low, high = run(sd3, [avatar(files, weight=0.3)]), run(sd3, [avatar(files, weight=0.9)])
    assert diff(low, high) > 0.5
    assert same(run(sd3, [avatar(files, weight=0.3)]), low)
    twice = [avatar(files, weight=0.45), avatar(files, weight=0.45)]  # merged: 0.9
    assert same(run(sd3, twice), high)


def test_face_and_style_share_the_one_sd3_adapter(sd3, files):
    # InstantX made one SD3 IP-Adapter: the same images at the same weight give the same picture.
    assert same(run(sd3, [avatar(files, "cartoon", 0.7)]), run(sd3, [style(files, "cartoon", 0.7)]))
    assert diff(run(sd3, [style(files, "cartoon", 0.7)]), run(sd3, [avatar(files, "lucy", 0.7)])) > 0.5


def test_embeddings_are_diffusers_own_and_several_images_are_averaged(sd3, files):
    ip = sd3._adapters.sd3_ip
    ref = avatar(files)
    run(sd3, [ref])
    encoder, processor = ip._load_encoder(ip._encoder[0])
    pos, neg = ip.embeds(ref, SimpleNamespace(encoder=ip._encoder[0]))
    pipe = SimpleNamespace(feature_extractor=processor, image_encoder=encoder, dtype=torch.float32)
    pipe.encode_image = lambda image, device: StableDiffusion3Pipeline.encode_image(pipe, image, device)
    with torch.inference_mode():
        theirs = StableDiffusion3Pipeline.prepare_ip_adapter_image_embeds(
            pipe, Image.open(files["lucy"]).convert("RGB"), None, "cpu", 1, True
        )
    ours = sd3._job.sd3_ip_kwargs(True, "cpu", torch.float32)["ip_adapter_image_embeds"]
    assert torch.equal(ours, theirs)  # [zeros, image] exactly as the pipeline builds them from an image
    assert not neg.any() and pos.shape == (16, 32)
    two = avatar(files, images=["lucy", "lucy2"])
    one_b, _ = ip.embeds(avatar(files, "lucy2"), SimpleNamespace(encoder=ip._encoder[0]))
    mean, _ = ip.embeds(two, SimpleNamespace(encoder=ip._encoder[0]))
    assert torch.allclose(mean, (pos + one_b) / 2, atol=1e-5)
    assert diff(run(sd3, [two]), run(sd3, [ref])) > 0


def test_image_embeddings_are_computed_once_per_avatar(sd3, files):
    run(sd3, [avatar(files, "cartoon")])
    calls = sd3._adapters.sd3_ip.encoder_calls
    run(sd3, [avatar(files, "cartoon", 0.2)])
    run(sd3, [style(files, "cartoon", 0.9)])  # the same images (digest) as a style: the same embeddings
    assert sd3._adapters.sd3_ip.encoder_calls == calls


def test_more_than_one_face_or_style_on_sd3_is_a_422_naming_them(sd3, files):
    with pytest.raises(UnsupportedFeature) as err:
        run(sd3, [avatar(files), style(files)])
    assert err.value.status == 422
    assert err.value.message == (
        "SD3 models take one face or style avatar per job (diffusers' SD3 IP-Adapter has a single image slot); "
        "this prompt has 2: <be-face:lucy>, <be-style:cartoon>. Keep one of them, or use an SD 1.5/SDXL model"
    )
    with pytest.raises(UnsupportedFeature, match=r"has 2: <be-face:lucy>, <be-face:lucy2>"):
        check_avatars([avatar(files), avatar(files, "lucy2", 0.4)], "sd3", param="prompt")
    check_avatars([avatar(files), avatar(files, "lucy2", 0.4), style(files)], "sd15")  # UNet: a slot each
    check_avatars([avatar(files), style(files, weight=0.0)], "sd3")  # weight 0 applies nothing


def test_pose_and_embedding_are_still_refused_on_sd3(sd3, files):
    pose = AvatarRef(AvatarKind.POSE, "run", 0.8, (files["lucy"],), digest="d-run")
    with pytest.raises(UnsupportedFeature) as err:
        run(sd3, [pose])
    assert err.value.message == (
        "pose avatars (<be-pose:run>) need an OpenPose ControlNet, which pictale does not support on SD3 models; "
        "use LoRA, face or style avatars, or an SD 1.5/SDXL model"
    )
    emb = AvatarRef(AvatarKind.EMBEDDING, "sparkle", 1.0, (files["lucy"],), digest="d-sp", token="<sparkle>")
    with pytest.raises(UnsupportedFeature, match=r"<be-embedding:sparkle>.*textual inversions"):
        run(sd3, [emb])


def test_missing_sd3_ip_adapter_files_say_where_to_put_them(tiny_models, files, tmp_path):
    nowhere = tmp_path / "nowhere"
    engine = _engine(tiny_models, nowhere)
    with pytest.raises(UnsupportedFeature) as err:
        run(engine, [avatar(files)])
    assert err.value.message.startswith(
        f"face avatar 'lucy' on SD3 needs the IP-Adapter file {nowhere}/sd3/ip-adapter.safetensors (not found): "
        "save InstantX/SD3.5-Large-IP-Adapter's weights there as safetensors"
    )
    assert "image encoder (google/siglip-so400m-patch14-384" in err.value.message
    assert f"in {nowhere}/sd3/image_encoder/" in err.value.message
    assert same(run(engine), run(engine))  # nothing was left half-applied
    pickle_only = tmp_path / "pickle"
    (pickle_only / "sd3").mkdir(parents=True)
    (pickle_only / "sd3" / "ip-adapter.bin").write_bytes(b"not read")
    with pytest.raises(UnsupportedFeature, match=r"ip-adapter.bin is there, but only safetensors files are read"):
        check_ip_adapter_files([style(files)], "sd3", pickle_only)
    no_encoder = tmp_path / "no-encoder"
    shutil.copytree(tiny_models["ip_adapter_sd3"], no_encoder / "sd3", ignore=shutil.ignore_patterns("image_*"))
    with pytest.raises(UnsupportedFeature, match=r"needs the IP-Adapter image encoder .*no-encoder/sd3/image_encoder/"):
        check_ip_adapter_files([style(files)], "sd3", no_encoder)
    check_ip_adapter_files([style(files)], "sd15", nowhere)  # SD 1.5/SDXL files are the engine's business
    check_ip_adapter_files([style(files, weight=0.0)], "sd3", nowhere)
    with pytest.raises(UnsupportedFeature, match="no IP-Adapter directory is configured"):
        run(_engine(tiny_models, None), [avatar(files)])


def test_lora_and_face_together_and_apart(sd3, files, tiny_models):
    lora = AvatarRef(AvatarKind.LORA, "toy", 1.0, (tiny_models["lora_sd3"],), digest="d-toy", family="sd3")
    lora_only = run(sd3, [lora])
    both = run(sd3, [lora, avatar(files)])
    assert diff(both, lora_only) > 0.5 and diff(both, run(sd3, [avatar(files)])) > 0.5
    assert same(run(sd3, [lora]), lora_only)


def test_img2img_inpaint_hires_batches_and_no_cfg_with_a_face(sd3, files):
    init = _noise_image(9, (64, 64))
    kw = dict(init_images=(init,), denoising_strength=0.6, steps=3)
    assert diff(run(sd3, [avatar(files)], **kw), run(sd3, **kw)) > 0.5
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    assert diff(run(sd3, [avatar(files)], mask=mask, **kw), run(sd3, mask=mask, **kw)) > 0.2
    hires = HiresSpec(scale=1.5, denoising_strength=0.5, second_pass_steps=2)
    with_face = run(sd3, [avatar(files)], hires=hires)
    assert with_face.shape == (1, 96, 96, 3) and diff(with_face, run(sd3, hires=hires)) > 0.5
    batch = run(sd3, [avatar(files)], batch=2)
    assert batch.shape[0] == 2 and diff(batch, run(sd3, batch=2)) > 0.5
    no_cfg = run(sd3, [avatar(files)], cfg_scale=1.0)  # without CFG: the embeds have no negative row
    assert diff(no_cfg, run(sd3, cfg_scale=1.0)) > 0.5
