"""Avatars applied per job by the engine: LoRA, embeddings, IP-Adapter faces/styles, OpenPose ControlNet."""

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef, GenerationSpec, HiresSpec
from pictale.engine import models
from pictale.engine.adapters import avatars as adapters
from pictale.engine.adapters import canonical, lora_adapter_name
from pictale.engine.adapters.pose import load_pose_detector
from pictale.engine.engine import Engine

PROMPT = "a photo of a cat"
TOKEN = "<be-emb-tiny>"


def _noise_image(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8"))


def _skeleton(seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    img = Image.new("RGB", (96, 80))
    draw = ImageDraw.Draw(img)
    for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)):
        draw.line([tuple(rng.randint(0, 80, 2)), tuple(rng.randint(0, 80, 2))], fill=colour, width=4)
    return img


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("avatar-files")
    out = {}
    for name, img in {
        "lucy": _noise_image(1),
        "lucy2": _noise_image(2),
        "bob": _noise_image(3),
        "cartoon": _noise_image(4),
        "run": _skeleton(5),
        "sit": _skeleton(6),
    }.items():
        out[name] = folder / f"{name}.png"
        img.save(out[name])
    return out


def _make_engine(tiny_models, family="sd15", **paths) -> Engine:
    paths = {"ip_adapter_path": tiny_models["ip_adapter"], "controlnet_path": tiny_models["controlnet"], **paths}
    engine = Engine(device="cpu", dtype="float32", **paths)
    engine.load(models.resolve_model(str(tiny_models[family]), tiny_models[family].parent))
    return engine


@pytest.fixture(scope="module")
def engine(tiny_models):
    return _make_engine(tiny_models)


def face(files, name="lucy", weight=0.8, images=None):
    images = images or [name]
    return AvatarRef(AvatarKind.FACE, name, weight, tuple(files[n] for n in images), digest="d-" + "+".join(images))


def style(files, name="cartoon", weight=0.7):
    return AvatarRef(AvatarKind.STYLE, name, weight, (files[name],), digest=f"d-{name}")


def pose(files, name="run", weight=1.0):
    return AvatarRef(AvatarKind.POSE, name, weight, (files[name],), digest=f"d-{name}")


def lora(path, name="toy", weight=0.9, family=None):
    return AvatarRef(AvatarKind.LORA, name, weight, (path,), digest=f"d-{path.stem}", family=family)


def embedding(path, weight=1.0, token=TOKEN):
    return AvatarRef(AvatarKind.EMBEDDING, "tiny", weight, (path,), digest=f"d-{path.stem}", token=token)


def run(engine, avatars=(), prompt=PROMPT, batch=1, seeds=None, **spec_kw) -> list[np.ndarray]:
    kw = dict(prompt=prompt, steps=2, width=64, height=64, sampler="Euler", batch_size=batch, avatars=tuple(avatars))
    spec = GenerationSpec(**{**kw, **spec_kw})
    seeds = seeds or [11 + i for i in range(batch)]
    init = list(spec.init_images) * batch if spec.init_images else None
    masks = [spec.mask] * batch if spec.mask is not None else None
    result = engine.generate(spec, [prompt] * batch, [""] * batch, seeds, [0] * batch, init_images=init, masks=masks)
    return [np.asarray(img) for img in result.images]


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def diff(a, b) -> float:
    return max(float(np.abs(x.astype(float) - y.astype(float)).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def base(engine):
    return run(engine)


# ---------------------------------------------------------------------------------------------- weight 0


def test_every_kind_at_weight_zero_is_the_image_without_it(engine, base, files, tiny_models):
    zero = [
        face(files, weight=0),
        style(files, weight=0),
        pose(files, weight=0),
        lora(tiny_models["lora_kohya"], weight=0),
        embedding(tiny_models["embedding"], weight=0),
    ]
    for ref in zero:
        assert same(run(engine, [ref]), base), ref.kind
    assert same(run(engine, zero), base)
    # Tokens that cancel out are weight 0 too.
    assert same(run(engine, [face(files, weight=0.5), face(files, weight=-0.5)]), base)


def test_canonical_merges_sorts_and_drops_zero(files):
    a, b = face(files, "lucy", 0.3), style(files, "cartoon", 0.2)
    merged = canonical([b, a, face(files, "lucy", 0.1), face(files, "bob", 0.0)])
    assert [(r.name, w) for r, w in merged] == [("lucy", pytest.approx(0.4)), ("cartoon", 0.2)]


# ---------------------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("fmt", ["lora_kohya", "lora_peft"])
def test_lora_changes_the_image_and_leaves_no_trace(engine, base, tiny_models, fmt):
    with_lora = run(engine, [lora(tiny_models[fmt])])
    assert diff(with_lora, base) > 5
    assert same(run(engine), base)  # the next job without LoRA is the base model, bit for bit
    assert same(run(engine, [lora(tiny_models[fmt])]), with_lora)
    assert lora_adapter_name(f"d-{tiny_models[fmt].stem}") in engine._pipe.get_list_adapters()["unet"]


def test_two_loras_with_their_own_weights_in_any_order(engine, base, tiny_models):
    kohya, peft = tiny_models["lora_kohya"], tiny_models["lora_peft"]
    both = run(engine, [lora(kohya, "a", 0.8), lora(peft, "b", -0.6)])
    assert same(run(engine, [lora(peft, "b", -0.6), lora(kohya, "a", 0.8)]), both)
    assert diff(both, run(engine, [lora(kohya, "a", 0.8)])) > 1
    assert diff(both, run(engine, [lora(kohya, "a", 0.8), lora(peft, "b", -0.3)])) > 1
    assert same(run(engine), base)


def test_base_model_is_never_reloaded(tiny_models, files, monkeypatch):
    engine = _make_engine(tiny_models)
    calls = []
    monkeypatch.setattr(models, "load_pipeline", lambda *a, **k: calls.append(a))
    pipe = engine._pipe
    for avatars in (
        [lora(tiny_models["lora_kohya"])],
        [face(files), style(files)],
        [pose(files), lora(tiny_models["lora_peft"])],
        [],
        [face(files, "lucy"), face(files, "bob"), pose(files, "sit")],
    ):
        run(engine, avatars)
    assert calls == [] and engine._pipe is pipe


def test_text_encoder_lora_is_part_of_the_embedding_cache_key(engine, tiny_models):
    engine._embeds.clear()
    run(engine)
    run(engine, [lora(tiny_models["lora_kohya"])])  # kohya file has text encoder layers
    keys = list(engine._embeds)
    assert len(keys) == 2 and keys[0][:3] == keys[1][:3]
    a, b = (engine._embeds[k]["prompt_embeds"] for k in keys)
    assert not a.equal(b)
    run(engine, [lora(tiny_models["lora_peft"])])  # UNet only: the embeddings are reused
    assert len(engine._embeds) == 2


def test_lora_for_another_family_is_refused(engine, tiny_models, tmp_path):
    sdxl = tiny_models["lora_sdxl"]
    with pytest.raises(UnsupportedFeature, match="lora 'toy' was trained for sdxl; the loaded model is sd15"):
        run(engine, [lora(sdxl, family="sdxl")])
    with pytest.raises(UnsupportedFeature, match="lora 'toy' was trained for sdxl"):
        run(engine, [lora(sdxl)])  # no family given: the header tells (second text encoder keys)
    unet_only = tmp_path / "xl_unet_only.safetensors"
    save_file({k: v for k, v in load_file(sdxl).items() if k.startswith("unet.")}, unet_only)
    with pytest.raises(UnsupportedFeature, match=r"lora 'toy'.*sd15"):
        run(engine, [lora(unet_only)])
    assert not any("xl_unet_only" in n for names in engine._pipe.get_list_adapters().values() for n in names)


# ---------------------------------------------------------------------------------------------- embeddings


def test_embedding_token_changes_the_image(engine, base, tiny_models):
    prompt = f"a photo of {TOKEN} cat"
    without = run(engine, prompt=prompt)  # the token's text, no embedding loaded yet
    with_emb = run(engine, [embedding(tiny_models["embedding"])], prompt=prompt)
    assert diff(with_emb, without) > 1  # the prompt-embedding cache knows about loaded embeddings
    assert diff(with_emb, base) > 1
    assert same(run(engine), base)  # loaded embeddings leave other prompts alone
    assert same(run(engine, [embedding(tiny_models["embedding"])], prompt=prompt), with_emb)


# ---------------------------------------------------------------------------------------------- IP-Adapter


def test_face_changes_the_image_and_unloads(engine, base, files):
    one = run(engine, [face(files)])
    assert diff(one, base) > 5
    assert same(run(engine), base)
    assert engine._pipe.unet.encoder_hid_proj is None  # no face/style: no IP-Adapter runs at all
    assert same(run(engine, [face(files)]), one)


def test_switching_between_face_and_lora_jobs_reattaches_without_reloading(
    engine, base, files, monkeypatch, tiny_models
):
    one = run(engine, [face(files)])
    loads = []
    real = type(engine._pipe).load_ip_adapter
    monkeypatch.setattr(type(engine._pipe), "load_ip_adapter", lambda *a, **k: loads.append(1) or real(*a, **k))
    for _ in range(2):
        assert same(run(engine, [lora(tiny_models["lora_peft"])]), run(engine, [lora(tiny_models["lora_peft"])]))
        assert engine._pipe.unet.encoder_hid_proj is None  # parked: the LoRA job runs without the IP-Adapter
        assert same(run(engine, [face(files)]), one)
    assert same(run(engine), base)
    assert loads == []  # the parked layout came back; nothing was reloaded


def test_two_faces_and_a_style_each_act_on_their_own(engine, files):
    lucy, bob, cartoon = face(files, "lucy", 0.6), face(files, "bob", 0.5), style(files, "cartoon", 0.7)
    mixed = run(engine, [lucy, bob, cartoon])
    assert engine._adapters.ip.layout and len(engine._adapters.ip.layout) == 3
    assert same(run(engine, [cartoon, bob, lucy]), mixed)  # token order does not matter
    assert diff(run(engine, [lucy, face(files, "bob", 0.9), cartoon]), mixed) > 1
    assert diff(run(engine, [face(files, "lucy", 0.2), bob, cartoon]), mixed) > 1
    assert diff(run(engine, [lucy, bob]), mixed) > 1
    assert diff(run(engine, [lucy, bob, style(files, "cartoon", 0.0)]), mixed) > 1
    assert same(run(engine, [lucy, bob, cartoon]), mixed)


def test_face_and_style_use_different_adapters(engine, files):
    as_face = run(engine, [face(files, "cartoon", 0.8)])
    as_style = run(engine, [style(files, "cartoon", 0.8)])
    assert diff(as_face, as_style) > 1


def test_several_images_per_face(engine, files):
    one = run(engine, [face(files)])
    two = run(engine, [face(files, images=["lucy", "lucy2"])])
    assert diff(one, two) > 0


def test_image_embeddings_are_computed_once(engine, files):
    run(engine, [face(files, "bob"), style(files)])
    calls = engine._adapters.ip.encoder_calls
    run(engine, [face(files, "bob", 0.3), style(files, weight=0.4)])
    run(engine, [style(files)])
    assert engine._adapters.ip.encoder_calls == calls
    run(engine, [face(files, "lucy2")])
    assert engine._adapters.ip.encoder_calls == calls + 1


def test_batch_of_two_with_a_face(engine, files):
    single = run(engine, [face(files)], seeds=[11])
    batch = run(engine, [face(files)], batch=2, seeds=[11, 12])
    assert len(batch) == 2 and diff(batch[:1], single) <= 1  # each prompt gets its own embeds rows
    assert diff(batch[:1], batch[1:]) > 5
    no_cfg = run(engine, [face(files)], batch=2, cfg_scale=1.0)  # without CFG: no negative rows
    assert diff(no_cfg, run(engine, batch=2, cfg_scale=1.0)) > 1


def test_model_switch_drops_adapters_and_reapplies_them(tiny_models, files, monkeypatch):
    monkeypatch.setattr(adapters, "MAX_LORAS", 1)
    engine = _make_engine(tiny_models)
    kohya, peft = lora(tiny_models["lora_kohya"]), lora(tiny_models["lora_peft"])
    first = run(engine, [kohya, face(files)])
    with_peft = run(engine, [peft])
    assert list(engine._adapters._loras) == [lora_adapter_name(peft.digest)]  # least recently used one deleted
    engine.load(models.resolve_model(str(tiny_models["sdxl"]), tiny_models["sdxl"].parent))
    run(engine, [lora(tiny_models["lora_sdxl"]), face(files)])
    engine.load(models.resolve_model(str(tiny_models["sd15"]), tiny_models["sd15"].parent))
    assert same(run(engine, [face(files), kohya]), first)
    assert same(run(engine, [peft]), with_peft)


def test_img2img_and_hires_with_a_face(engine, files):
    init = Image.fromarray(np.asarray(_noise_image(9, (64, 64))))
    kw = dict(init_images=(init,), denoising_strength=0.6)
    plain = run(engine, **kw)
    with_face = run(engine, [face(files)], **kw)
    assert diff(plain, with_face) > 1
    with_pose = run(engine, [face(files), pose(files)], **kw)
    assert diff(with_pose, with_face) > 1
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    inpainted = run(engine, [face(files), pose(files, "sit")], mask=mask, **kw)
    assert diff(inpainted, run(engine, mask=mask, **kw)) > 1
    hires = HiresSpec(scale=1.5, denoising_strength=0.5, second_pass_steps=2)
    out = run(engine, [face(files), pose(files)], hires=hires)
    assert out[0].shape == (96, 96, 3)


def test_missing_ip_adapter_files_name_the_path(tiny_models, files, tmp_path):
    engine = _make_engine(tiny_models, ip_adapter_path=tmp_path / "nowhere")
    with pytest.raises(UnsupportedFeature, match=r"face avatar 'lucy'.*nowhere/models/ip-adapter-full-face_sd15"):
        run(engine, [face(files)])
    partial = tmp_path / "partial"
    shutil.copytree(tiny_models["ip_adapter"] / "models", partial / "models")
    shutil.rmtree(partial / "models" / "image_encoder")
    engine = _make_engine(tiny_models, ip_adapter_path=partial)
    with pytest.raises(UnsupportedFeature, match="partial/models/image_encoder"):
        run(engine, [style(files)])
    engine = _make_engine(tiny_models, ip_adapter_path=None)
    with pytest.raises(UnsupportedFeature, match="no IP-Adapter directory is configured"):
        run(engine, [face(files)])


# ---------------------------------------------------------------------------------------------- pose


def test_pose_changes_the_image_and_two_poses_work(engine, base, files):
    one = run(engine, [pose(files)])
    assert diff(one, base) > 5
    two = run(engine, [pose(files), pose(files, "sit", 0.6)])
    assert diff(two, one) > 1
    assert same(run(engine, [pose(files, "sit", 0.6), pose(files)]), two)
    assert same(run(engine), base)


def test_pose_face_style_and_lora_together(engine, base, files, tiny_models):
    avatars = [face(files), style(files), pose(files), lora(tiny_models["lora_peft"])]
    together = run(engine, avatars)
    assert diff(together, base) > 5
    assert same(run(engine, avatars[::-1]), together)
    assert same(run(engine, [face(files, weight=0), pose(files, weight=0)]), base)


def test_missing_controlnet_names_the_path(tiny_models, files, tmp_path):
    engine = _make_engine(tiny_models, controlnet_path=tmp_path)
    with pytest.raises(UnsupportedFeature, match=f"pose avatar 'run'.*{tmp_path}/openpose-sd15"):
        run(engine, [pose(files)])


def test_no_pose_detector_without_controlnet_aux(tmp_path):
    assert load_pose_detector(tmp_path) is None
    assert load_pose_detector(None) is None


# ---------------------------------------------------------------------------------------------- SDXL


def test_sdxl_avatars(tiny_models, files):
    engine = _make_engine(tiny_models, "sdxl")
    xl_base = run(engine)
    prompt = f"a photo of {TOKEN} cat"
    avatars = [
        face(files),
        style(files),
        pose(files),
        lora(tiny_models["lora_sdxl"], family="sdxl"),
        embedding(tiny_models["embedding_sdxl"]),
    ]
    for ref in avatars:
        assert diff(run(engine, [ref], prompt=prompt if ref.kind is AvatarKind.EMBEDDING else PROMPT), xl_base) > 1
    assert same(run(engine), xl_base)
    together = run(engine, avatars, prompt=prompt, batch=2)
    assert len(together) == 2
    assert same(
        run(engine, [*avatars[:4], embedding(tiny_models["embedding_sdxl"], weight=0)]), run(engine, avatars[:4])
    )
    assert [p.name for p in engine._adapters.ip.layout] == [
        "ip-adapter-plus-face_sdxl_vit-h.safetensors",
        "ip-adapter_sdxl.safetensors",
    ]
    with pytest.raises(UnsupportedFeature, match="lora 'toy' was trained for sd15; the loaded model is sdxl"):
        run(engine, [lora(tiny_models["lora_peft"], family="sd15")])
    with pytest.raises(UnsupportedFeature, match=r"embedding 'tiny'.*sdxl"):
        run(engine, [embedding(tiny_models["embedding"], token="<other>")])
