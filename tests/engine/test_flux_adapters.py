"""FLUX.1 avatars on the tiny Flux dev model, through `AvatarAdapters`: LoRA in four formats, the XLabs
IP-Adapter (parked / re-attached) and the union ControlNet for poses, all asserted on pixels (64x64, 2 steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxImg2ImgPipeline
from PIL import Image
from safetensors.torch import load_file

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef, Mode
from pictale.engine.adapters.avatars import AvatarAdapters
from pictale.engine.checks.adapter_fit import lora_family_hint
from pictale.engine.families.support import check_ip_adapter_files
from pictale.engine.tiny.flux import build_tiny_flux
from pictale.engine.tiny.flux_adapters import (
    FLUX_ADAPTER_SEED,
    flux_lora_pairs,
    peft_state,
    write_tiny_flux_adapters,
    write_tiny_flux_controlnet,
)

FORMATS = ("lora_flux_peft", "lora_flux_kohya", "lora_flux_aitoolkit", "lora_flux_xlabs")


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-adapters")
    pipe = build_tiny_flux("dev")
    pipe.set_progress_bar_config(disable=True)
    paths = write_tiny_flux_adapters(root, pipe)
    for seed in (1, 2, 3, 4):
        _noise(seed).save(root / f"img{seed}.png")
    return pipe, paths, root


@pytest.fixture
def adapters(flux):
    pipe, paths, _ = flux
    adapters = AvatarAdapters(
        ip_adapter_path=paths["ip_adapter"], controlnet_path=paths["controlnet"], device="cpu", dtype=torch.float32
    )
    yield adapters
    adapters.apply(pipe, "flux", ())  # park the IP-Adapter, disable LoRAs: the module's pipe stays the base
    pipe.unload_lora_weights()
    adapters.reset()


def _noise(seed: int, size=(64, 64)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8"))


def ref(kind: AvatarKind, name: str, files, weight: float = 1.0, family: str | None = None) -> AvatarRef:
    files = tuple(Path(f) for f in files)
    return AvatarRef(kind, name, weight, files, digest=f"d-{name}-{len(files)}", family=family, source="lora-file")


def run(pipe, seed=7, batch=1, **kw) -> np.ndarray:
    out = pipe(
        ["a red fox in the snow"] * batch,
        num_inference_steps=2,
        guidance_scale=3.5,
        height=64,
        width=64,
        max_sequence_length=64,
        generator=[torch.Generator().manual_seed(seed + i) for i in range(batch)],
        output_type="np",
        **kw,
    )
    return out.images


@pytest.fixture(scope="module")
def base(flux):
    return run(flux[0])


def test_writers_are_seeded_and_byte_identical(flux, tmp_path):
    pipe, paths, root = flux
    again = write_tiny_flux_adapters(tmp_path, pipe)
    for key, path in paths.items():
        if Path(path).is_file():
            assert Path(path).read_bytes() == Path(again[key]).read_bytes(), key
    for name in ("ip_adapter.safetensors", "image_encoder/model.safetensors"):
        assert (root / "IP-Adapter/flux" / name).read_bytes() == (tmp_path / "IP-Adapter/flux" / name).read_bytes()
    net = "ControlNet/flux-union/diffusion_pytorch_model.safetensors"
    assert (root / net).read_bytes() == (tmp_path / net).read_bytes()
    assert json.loads((root / "ControlNet/flux-union/config.json").read_text())["num_mode"] == 10
    assert all(Path(p).stat().st_size < 200_000 for p in paths.values() if Path(p).is_file())


@pytest.mark.parametrize("key", FORMATS)
def test_each_lora_format_changes_the_image_and_weight_0_is_the_base(flux, adapters, base, key):
    pipe, paths, _ = flux
    assert lora_family_hint(paths[key]) == "flux"
    lora = ref(AvatarKind.LORA, key, [paths[key]])
    adapters.apply(pipe, "flux", (lora,))
    changed = run(pipe)
    assert np.abs(changed - base).mean() > 0.01
    adapters.apply(pipe, "flux", (ref(AvatarKind.LORA, key, [paths[key]], weight=0.0),))
    assert np.array_equal(run(pipe), base)
    adapters.apply(pipe, "flux", ())
    assert np.array_equal(run(pipe), base)
    adapters.apply(pipe, "flux", (lora,))  # switching back: no reload, same image
    assert np.array_equal(run(pipe), changed)


def test_kohya_and_peft_of_the_same_weights_give_the_same_image(flux, adapters):
    pipe, paths, _ = flux
    adapters.apply(pipe, "flux", (ref(AvatarKind.LORA, "peft", [paths["lora_flux_peft"]]),))
    peft = run(pipe)
    adapters.apply(pipe, "flux", (ref(AvatarKind.LORA, "kohya", [paths["lora_flux_kohya"]]),))
    assert np.array_equal(run(pipe), peft)


def test_ai_toolkit_alpha_keys_scale_the_lora(flux, adapters, tmp_path):
    pipe, paths, _ = flux
    adapters.apply(pipe, "flux", (ref(AvatarKind.LORA, "ait", [paths["lora_flux_aitoolkit"]]),))
    with_alpha = run(pipe)
    assert any(k.endswith(".alpha") for k in load_file(str(paths["lora_flux_aitoolkit"])))
    # alpha = r/2 is the same LoRA as B * 0.5 without alphas
    pairs = flux_lora_pairs(pipe.transformer, FLUX_ADAPTER_SEED + 1, single_attention=True)
    from safetensors.torch import save_file

    save_file(peft_state({k: (a, b * 0.5) for k, (a, b) in pairs.items()}), str(tmp_path / "half.safetensors"))
    adapters.apply(pipe, "flux", (ref(AvatarKind.LORA, "half", [tmp_path / "half.safetensors"]),))
    assert np.abs(run(pipe) - with_alpha).max() < 1e-4


def test_lora_of_another_family_is_the_mismatch_422(flux, adapters, tiny_models):
    pipe = flux[0]
    for key in ("lora_peft", "lora_sd3"):
        if key in tiny_models:
            with pytest.raises(UnsupportedFeature, match=r"was trained for .*; the loaded model is flux"):
                adapters.apply(pipe, "flux", (ref(AvatarKind.LORA, key, [tiny_models[key]]),))
    if "lora_sd3" in tiny_models:
        assert lora_family_hint(tiny_models["lora_sd3"]) == "sd3"


def test_face_changes_the_image_parks_exactly_and_reattaches(flux, adapters, base):
    pipe, _, root = flux
    face = ref(AvatarKind.FACE, "lucy", [root / "img1.png"], weight=0.8)
    job = adapters.apply(pipe, "flux", (face,))
    assert set(job.flux_ip) == {"ip_adapter_image_embeds", "negative_ip_adapter_image_embeds"}
    first = run(pipe, **job.flux_ip)
    assert np.abs(first - base).mean() > 0.01
    job = adapters.apply(pipe, "flux", ())
    assert job.flux_ip == {}
    assert np.array_equal(run(pipe), base)  # parked: no crash without an IP image, and the base image
    calls = adapters.flux_ip.encoder_calls
    job = adapters.apply(pipe, "flux", (face,))
    assert np.array_equal(run(pipe, **job.flux_ip), first)
    assert adapters.flux_ip.loads == 1 and adapters.flux_ip.encoder_calls == calls  # cached by digest
    # several images of one avatar: all are used, one token set each
    two = ref(AvatarKind.FACE, "lucy2", [root / "img1.png", root / "img2.png"], weight=0.8)
    job = adapters.apply(pipe, "flux", (two,))
    assert job.flux_ip["ip_adapter_image_embeds"][0].shape[:2] == (1, 2)
    assert np.abs(run(pipe, **job.flux_ip) - first).mean() > 0.001
    # the adapter is on the shared transformer: an img2img variant gets it with the same kwargs, batch of 2
    i2i = FluxImg2ImgPipeline.from_pipe(pipe)
    i2i.set_progress_bar_config(disable=True)
    out = run(i2i, batch=2, image=_noise(3), strength=0.7, **job.flux_ip)
    assert out.shape == (2, 64, 64, 3)


def test_missing_ip_adapter_files_name_the_path_and_the_weights(flux, tmp_path):
    pipe, paths, root = flux
    face = ref(AvatarKind.FACE, "lucy", [root / "img1.png"])
    with pytest.raises(UnsupportedFeature) as err:
        check_ip_adapter_files([face], "flux", tmp_path, param="prompt")
    assert "flux/ip_adapter.safetensors" in err.value.message and "XLabs-AI/flux-ip-adapter" in err.value.message
    assert "openai/clip-vit-large-patch14" in err.value.message
    check_ip_adapter_files([face], "flux", paths["ip_adapter"])  # present: no error
    adapters = AvatarAdapters(ip_adapter_path=tmp_path, controlnet_path=tmp_path, device="cpu", dtype=torch.float32)
    with pytest.raises(UnsupportedFeature, match="XLabs-AI/flux-ip-adapter"):
        adapters.apply(pipe, "flux", (face,))
    pose = ref(AvatarKind.POSE, "run", [root / "img3.png"])
    with pytest.raises(UnsupportedFeature, match=r"flux-union/ \(not found\).*InstantX/FLUX.1-dev-Controlnet-Union"):
        adapters.apply(pipe, "flux", (pose,))


def test_adapters_for_another_flux_shape_are_a_422_naming_file_and_model(flux, tmp_path):
    pipe, paths, root = flux
    shutil.copytree(paths["ip_adapter"], tmp_path / "ip")
    shutil.copytree(paths["controlnet"], tmp_path / "cn")
    for path in (tmp_path / "ip/flux/image_encoder/config.json", tmp_path / "cn/flux-union/config.json"):
        config = json.loads(path.read_text())
        config.update(projection_dim=768) if "projection_dim" in config else config.update(attention_head_dim=128)
        path.write_text(json.dumps(config))
    adapters = AvatarAdapters(ip_adapter_path=tmp_path / "ip", controlnet_path=tmp_path / "cn", device="cpu",
                              dtype=torch.float32)  # fmt: skip
    face = ref(AvatarKind.FACE, "lucy", [root / "img1.png"])
    with pytest.raises(UnsupportedFeature, match=r"ip_adapter.safetensors does not fit the loaded model .*768"):
        adapters.apply(pipe, "flux", (face,))
    pose = ref(AvatarKind.POSE, "run", [root / "img3.png"])
    with pytest.raises(UnsupportedFeature, match=r"flux-union/ does not fit the loaded model .*256 wide"):
        adapters.apply(pipe, "flux", (pose,))


def _pose_run(adapters, pipe, job, mode=Mode.TXT2IMG, batch=1, **kw):
    cn = adapters.flux_controlnet_pipeline(pipe, mode, len(job.poses))
    return run(cn, batch=batch, **kw, **job.flux_ip, **job.flux_control_kwargs(64, 64))


def test_pose_scale_0_is_the_base_and_poses_change_it(flux, adapters, base):
    pipe, _, root = flux
    pose = ref(AvatarKind.POSE, "run", [root / "img3.png"])
    job = adapters.apply(pipe, "flux", (pose,))
    job.poses = [(img, 0.0) for img, _ in job.poses]  # scale 0 (a weight-0 token applies no ControlNet at all)
    assert np.array_equal(_pose_run(adapters, pipe, job), base)  # the seed's noise is not spent on the pose
    one = _pose_run(adapters, pipe, adapters.apply(pipe, "flux", (pose,)))
    assert np.abs(one - base).mean() > 0.01
    two = adapters.apply(pipe, "flux", (pose, ref(AvatarKind.POSE, "jump", [root / "img4.png"], weight=0.6)))
    assert len(two.poses) == 2 and two.flux_control_kwargs(64, 64)["control_mode"] == [4, 4]
    both = _pose_run(adapters, pipe, two)
    assert np.abs(both - one).mean() > 0.001
    assert adapters.flux_controlnet_pipeline(pipe, Mode.TXT2IMG, 2) is adapters.flux_controlnet_pipeline(
        pipe, Mode.TXT2IMG, 2
    )
    assert adapters.flux_cn.loads == 1


def test_pose_with_face_in_img2img_batches(flux, adapters):
    pipe, _, root = flux
    face = ref(AvatarKind.FACE, "lucy", [root / "img1.png"], weight=0.8)
    poses = (ref(AvatarKind.POSE, "run", [root / "img3.png"]), ref(AvatarKind.POSE, "jump", [root / "img4.png"]))
    i2i = FluxImg2ImgPipeline.from_pipe(pipe)
    i2i.set_progress_bar_config(disable=True)
    job = adapters.apply(pipe, "flux", (face, *poses))
    plain = run(i2i, batch=2, image=_noise(2), strength=0.7, **job.flux_ip)
    job.poses = [(img, 0.0) for img, _ in job.poses]
    zero = _pose_run(adapters, pipe, job, Mode.IMG2IMG, batch=2, image=_noise(2), strength=0.7)
    assert np.array_equal(zero, plain)


def test_union_pro_2_without_mode_embedding(flux, tmp_path, base):
    pipe, _, root = flux
    write_tiny_flux_controlnet(tmp_path / "flux-union", pipe, num_mode=None)
    adapters = AvatarAdapters(ip_adapter_path=None, controlnet_path=tmp_path, device="cpu", dtype=torch.float32)
    job = adapters.apply(pipe, "flux", (ref(AvatarKind.POSE, "run", [root / "img3.png"]),))
    assert job.flux_control_kwargs(64, 64)["control_mode"] == [None]
    assert np.abs(_pose_run(adapters, pipe, job) - base).mean() > 0.01
