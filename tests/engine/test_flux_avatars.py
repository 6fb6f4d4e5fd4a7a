"""Avatars on FLUX.1 through the engine (tiny dev): LoRA formats, face/style through the XLabs IP-Adapter, pose
through the union ControlNet, in txt2img, img2img, hires and on Kontext; weight 0 is the image without the token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef, GenerationSpec, HiresSpec
from pictale.engine import models
from pictale.engine.engine import Engine

PROMPT = "a red fox in the snow"


def _face(tmp: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = tmp / f"face{seed}.png"
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
    return path


def _pose(tmp: Path) -> Path:
    img = Image.new("RGB", (64, 64))
    ImageDraw.Draw(img).line([(32, 8), (32, 40), (16, 60), (32, 40), (48, 60)], fill=(255, 0, 0), width=3)
    path = tmp / "pose.png"
    img.save(path)
    return path


def ref(kind: AvatarKind, name: str, path: Path, weight: float) -> AvatarRef:
    return AvatarRef(kind, name, weight, (path,), digest=f"d-{name}", source="avatar")


@pytest.fixture(scope="module")
def engines(tiny_models):
    out = {}
    for variant in ("dev", "kontext"):
        engine = Engine(
            device="cpu", dtype="float32", ip_adapter_path=tiny_models["ip_adapter"],
            controlnet_path=tiny_models["controlnet"],
        )  # fmt: skip
        engine.load(models.resolve_model(str(tiny_models[f"flux_{variant}"]), tiny_models["flux_dev"].parent))
        out[variant] = engine
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flux-avatars")
    return {"face": _face(tmp, 1), "face2": _face(tmp, 2), "pose": _pose(tmp)}


def run(engine, avatars=(), seed=3, init=None, **fields) -> np.ndarray:
    base = {"prompt": PROMPT, "steps": 2, "width": 64, "height": 64, "cfg_scale": 1.0, "avatars": tuple(avatars)}
    spec = GenerationSpec(**{**base, **fields, **({"init_images": (init,)} if init is not None else {})})
    result = engine.generate(spec, [PROMPT], [""], [seed], [seed + 1], init_images=[init] if init else None)
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("fmt", ["peft", "kohya", "aitoolkit", "xlabs"])
def test_lora_formats_change_the_image_and_weight_0_is_the_base(engines, tiny_models, fmt):
    dev = engines["dev"]
    path = tiny_models[f"lora_flux_{fmt}"]
    base = run(dev)
    lora = AvatarRef(AvatarKind.LORA, fmt, 0.9, (path,), digest=f"l-{fmt}", family="flux", source="lora-file")
    changed = run(dev, [lora])
    assert not np.array_equal(changed, base)
    assert np.array_equal(run(dev, [AvatarRef(**{**lora.__dict__, "weight": 0.0})]), base)
    assert np.array_equal(run(dev), base)  # a job without it: the base model, never reloaded
    assert np.array_equal(run(dev, [lora]), changed)


def test_face_and_style_through_the_ip_adapter(engines, files):
    dev = engines["dev"]
    base = run(dev)
    face = run(dev, [ref(AvatarKind.FACE, "lucy", files["face"], 0.8)])
    assert not np.array_equal(face, base)
    assert np.array_equal(run(dev), base)  # parked: exactly the image without the adapter
    assert not np.array_equal(run(dev, [ref(AvatarKind.STYLE, "ink", files["face2"], 0.8)]), face)
    hires = run(
        dev, [ref(AvatarKind.FACE, "lucy", files["face"], 0.8)], hires=HiresSpec(scale=1.5, denoising_strength=0.5)
    )
    assert hires.shape == (96, 96, 3)
    with pytest.raises(UnsupportedFeature, match="one face or style avatar per job"):
        run(dev, [ref(AvatarKind.FACE, "lucy", files["face"], 0.8), ref(AvatarKind.FACE, "max", files["face2"], 0.5)])


def test_pose_through_the_union_controlnet(engines, files):
    dev = engines["dev"]
    base = run(dev)
    pose = run(dev, [ref(AvatarKind.POSE, "run", files["pose"], 0.8)])
    assert not np.array_equal(pose, base)
    assert np.array_equal(run(dev, [ref(AvatarKind.POSE, "run", files["pose"], 0.0)]), base)
    init = Image.new("RGB", (64, 64), (200, 60, 60))
    moved = run(dev, [ref(AvatarKind.POSE, "run", files["pose"], 0.8)], init=init, denoising_strength=0.7, steps=4)
    assert not np.array_equal(moved, run(dev, init=init, denoising_strength=0.7, steps=4))
    both = run(dev, [ref(AvatarKind.POSE, "run", files["pose"], 0.8), ref(AvatarKind.FACE, "lucy", files["face"], 0.8)])
    assert not np.array_equal(both, pose)


def test_avatars_on_kontext(engines, files):
    kontext = engines["kontext"]
    init = Image.new("RGB", (64, 64), (200, 60, 60))
    plain = run(kontext, init=init, denoising_strength=1.0)
    face = run(kontext, [ref(AvatarKind.FACE, "lucy", files["face"], 0.8)], init=init, denoising_strength=1.0)
    assert not np.array_equal(face, plain)
    posed = kontext.generate(
        GenerationSpec(prompt=PROMPT, steps=2, width=64, height=64, cfg_scale=1.0,
                       avatars=(ref(AvatarKind.POSE, "run", files["pose"], 0.8),)),
        [PROMPT], [""], [3], [4],
    )  # fmt: skip
    assert posed.infotext["Pose note"].startswith("Kontext reference editing takes no ControlNet")
