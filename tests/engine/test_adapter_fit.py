"""Adapter fit from headers and configs: the tiny adapters fit the tiny models and nothing else."""

from __future__ import annotations

import pytest

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarKind, AvatarRef
from pictale.engine.checks.adapter_fit import (
    ModelDims,
    check_adapter_fit,
    controlnet_misfit,
    ip_adapter_misfit,
    ip_files,
    unet_dims,
)
from pictale.engine.tiny import build_tiny_sd15, build_tiny_sdxl

SD15 = ModelDims(
    "v1-5-pruned",
    "sd15",
    768,
    (320,) * 2 + (640,) * 2 + (1280,) * 6 + (640,) * 3 + (320,) * 3 + (1280,),
    (320, 640, 1280, 1280),
)


def _ref(kind: AvatarKind, name: str) -> AvatarRef:
    return AvatarRef(kind=kind, name=name, weight=0.5, digest=name * 8, files=())


@pytest.fixture(scope="module")
def tiny_dims():
    pipe = build_tiny_sd15()
    return unet_dims(pipe.unet, "tiny-sd15", "sd15")


def test_the_tiny_adapters_fit_the_tiny_sd15(tiny_models, tiny_dims):
    assert (tiny_dims.cross_attention_dim, tiny_dims.ip_hidden, tiny_dims.block_out_channels) == (
        32,
        (32, 32, 32, 64),
        (32, 64),
    )
    for kind in (AvatarKind.FACE, AvatarKind.STYLE):
        assert ip_adapter_misfit(ip_files(tiny_models["ip_adapter"], "sd15", kind, "x"), tiny_dims) is None
    assert controlnet_misfit(tiny_models["controlnet"] / "openpose-sd15", tiny_dims) is None
    refs = [_ref(AvatarKind.FACE, "a"), _ref(AvatarKind.STYLE, "b"), _ref(AvatarKind.POSE, "c")]
    check_adapter_fit(refs, tiny_dims, tiny_models["ip_adapter"], tiny_models["controlnet"])


def test_a_real_sd15_is_told_the_tiny_adapters_are_the_demos(tiny_models):
    face = ip_files(tiny_models["ip_adapter"], "sd15", AvatarKind.FACE, "lucy")
    assert ip_adapter_misfit(face, SD15) == (
        "its layers take cross-attention width 32, the model's is 768 "
        "(it is one of pictale's tiny test/demo adapters: it fits only the tiny demo model)"
    )
    assert controlnet_misfit(tiny_models["controlnet"] / "openpose-sd15", SD15) == (
        "its blocks have [32, 64] channels, the model's UNet [320, 640, 1280, 1280] "
        "(it is one of pictale's tiny test/demo adapters: it fits only the tiny demo model)"
    )
    with pytest.raises(UnsupportedFeature) as err:
        check_adapter_fit([_ref(AvatarKind.FACE, "lucy")], SD15, tiny_models["ip_adapter"], None)
    assert err.value.status == 422 and err.value.message.startswith(
        f"face avatar 'lucy': the IP-Adapter file {face.weights} does not fit the loaded model 'v1-5-pruned' "
        "(SD 1.5, cross-attention width 768): its layers take cross-attention width 32"
    )


def test_layer_count_and_image_encoder_mismatches_are_named(tiny_models, tiny_dims, tmp_path):
    import shutil

    xl = build_tiny_sdxl()
    xl_dims = unet_dims(xl.unet, "tiny-sdxl", "sdxl")
    sd15_face = ip_files(tiny_models["ip_adapter"], "sd15", AvatarKind.FACE, "x")
    assert ip_adapter_misfit(sd15_face, xl_dims) == "its layers take cross-attention width 32, the model's is 96"
    # the right adapter with another image encoder beside it (the SDXL encoder projects to 48, not 32)
    root = tmp_path / "IP-Adapter"
    shutil.copytree(tiny_models["ip_adapter"] / "models", root / "models")
    shutil.rmtree(root / "models" / "image_encoder")
    shutil.copytree(tiny_models["ip_adapter"] / "sdxl_models" / "image_encoder", root / "models" / "image_encoder")
    style = ip_files(root, "sd15", AvatarKind.STYLE, "x")
    assert ip_adapter_misfit(style, tiny_dims) == (
        f"its image projection takes 32-wide image features, the image encoder {root / 'models' / 'image_encoder'}/ "
        "gives 48"
    )
    fewer = ModelDims("m", "sd15", 32, (32,), (32, 64))
    assert ip_adapter_misfit(sd15_face, fewer) == "it has 4 cross-attention layers, the model has 1"


def test_weight_zero_and_sd3_are_not_checked(tiny_models):
    zero = AvatarRef(kind=AvatarKind.FACE, name="z", weight=0.0, digest="z" * 8, files=())
    check_adapter_fit([zero], SD15, tiny_models["ip_adapter"], None)
    sd3 = ModelDims("sd3", "sd3", 32, (), ())
    check_adapter_fit([_ref(AvatarKind.FACE, "f")], sd3, tiny_models["ip_adapter"], None)


def test_tiny_models_are_known_by_their_width_not_their_name(tiny_models, tmp_path):
    import json

    from pictale.core.types import ModelEntry
    from pictale.engine.demo.layout import is_tiny

    def entry(path, source="folder"):
        return ModelEntry("t", "tiny-x", str(path), source)

    assert is_tiny(entry(tiny_models["sd15"])) and is_tiny(entry(tiny_models["sd15_single"], "single_file"))
    real = tmp_path / "tiny-but-real"
    (real / "unet").mkdir(parents=True)
    (real / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 768}))
    assert not is_tiny(entry(real)) and not is_tiny(None)
    assert is_tiny(entry(tmp_path / "anywhere", "tiny"))  # the demo, by where it came from
