"""LoRA and embedding inspection: formats, families, and the 422s for everything else."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save

from pictale.avatars.tensors import inspect_embedding, inspect_lora
from pictale.core.errors import InvalidUpload
from tests.avatars import files


def write(tmp_path, tensors: dict, name="x.safetensors"):
    path = tmp_path / name
    path.write_bytes(save({k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}))
    return path


def pair(prefix: str, d_in: int, d_out: int, style: str = "kohya", rank: int = 2) -> dict:
    down, up = np.zeros((rank, d_in)), np.zeros((d_out, rank))
    if style == "kohya":
        return {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up, f"{prefix}.alpha": np.float32(2)}
    if style == "peft":
        return {f"{prefix}.lora_A.weight": down, f"{prefix}.lora_B.weight": up}
    return {f"{prefix}.lora.down.weight": down, f"{prefix}.lora.up.weight": up}


def test_tiny_sd15_loras_in_both_formats(tmp_path, sd15):
    for name, data in (("k.safetensors", files.lora_kohya(sd15)), ("p.safetensors", files.lora_peft(sd15))):
        (tmp_path / name).write_bytes(data)
        info = inspect_lora(tmp_path / name, name)
        assert (info.family, info.cross_attention_dim, info.rank) == ("sd15", 32, 4)


@pytest.mark.parametrize(
    ("key", "family", "width"),
    [("lora_kohya", "sd15", 32), ("lora_peft", "sd15", 32), ("lora_sdxl", "sdxl", 96)],
)
def test_the_engines_tiny_loras(tiny_models, key, family, width):
    """The files engine/tiny_adapters.py writes (the ones the engine tests load) are recognised too."""
    if key not in tiny_models:
        pytest.skip(f"tiny_models has no {key}")
    info = inspect_lora(tiny_models[key], key)
    assert (info.family, info.cross_attention_dim) == (family, width)


def test_the_engines_tiny_embeddings(tiny_models):
    for key, family, width in (("embedding", "sd15", 32), ("embedding_sdxl", "sdxl", 96)):
        if key in tiny_models:
            info = inspect_embedding(tiny_models[key], key)
            assert (info.family, info.cross_attention_dim, info.vectors) == (family, width, 2)


def test_real_sized_sd15_and_sdxl_loras(tmp_path):
    sd15 = pair("lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 768, 640)
    assert inspect_lora(write(tmp_path, sd15), "a").family == "sd15"
    sdxl = pair("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048, 640)
    info = inspect_lora(write(tmp_path, sdxl), "b")
    assert (info.family, info.cross_attention_dim) == ("sdxl", 2048)
    # text encoders only: te1 + te2 widths give the UNet's cross-attention width
    te = pair("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768)
    te |= pair("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280)
    info = inspect_lora(write(tmp_path, te), "c")
    assert (info.family, info.cross_attention_dim) == ("sdxl", 2048)
    peft_xl = pair("text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj", 1280, 1280, "peft")
    assert inspect_lora(write(tmp_path, peft_xl), "d").family == "sdxl"
    old = pair("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora", 768, 320, "old")
    assert inspect_lora(write(tmp_path, {k.replace(".lora.", "_lora."): v for k, v in old.items()}), "e").family == (
        "sd15"
    )


def test_tiny_sdxl_layout_is_told_apart_by_its_blocks(tmp_path):
    xl = pair("unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", 96, 64, "peft")
    info = inspect_lora(write(tmp_path, xl), "xl")
    assert (info.family, info.cross_attention_dim) == ("sdxl", 96)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"weight": np.zeros((8, 8))}, "x.safetensors: not a LoRA: none of its 1 tensors has LoRA names"),
        (
            pair("lora_unet_down_blocks_0_attentions_0_proj_in", 32, 32) | {"lora_unet_x.hada_w1_a": np.zeros(2)},
            "LyCORIS/LoHa/LoKr files are not supported",
        ),
        (
            {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 32))},
            "has no up weight",
        ),
        (
            {
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 32)),
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": np.zeros((32, 2)),
            },
            "mismatched shapes [4, 32] and [32, 2]",
        ),
        (pair("transformer.pos_embedder.proj", 3072, 3072, "peft"), "not part of a Stable"),
        (pair("lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 1024, 640), "Diffusion 2.x"),
        (pair("lora_unet_down_blocks_1_resnets_0_conv1", 32, 32), "cannot tell whether this LoRA is for SD 1.5"),
    ],
)
def test_not_a_usable_lora(tmp_path, tensors, message):
    with pytest.raises(InvalidUpload) as err:
        inspect_lora(write(tmp_path, tensors), "x.safetensors")
    assert message in err.value.message


def test_corrupt_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00{not json at all, just garbage!}")
    with pytest.raises(InvalidUpload, match=r"^bad.safetensors: not a valid .safetensors file \("):
        inspect_lora(path, "bad.safetensors")
    path.write_bytes(save({"a": np.zeros(4, dtype=np.float32)})[:-3])  # truncated data
    with pytest.raises(InvalidUpload, match=r"not a valid \.safetensors file"):
        inspect_embedding(path, "bad.safetensors")


def test_embedding_formats(tmp_path, sd15):
    (tmp_path / "e.safetensors").write_bytes(files.embedding(sd15, vectors=3))
    info = inspect_embedding(tmp_path / "e.safetensors", "e")
    assert (info.family, info.cross_attention_dim, info.vectors) == ("sd15", 32, 3)
    a1111 = inspect_embedding(write(tmp_path, {"string_to_param.*": np.zeros((2, 768))}), "a")
    assert (a1111.family, a1111.vectors) == ("sd15", 2)
    diffusers_ti = inspect_embedding(write(tmp_path, {"<cat-toy>": np.zeros(768)}), "d")
    assert (diffusers_ti.family, diffusers_ti.vectors) == ("sd15", 1)
    xl = inspect_embedding(write(tmp_path, {"clip_l": np.zeros((4, 768)), "clip_g": np.zeros((4, 1280))}), "xl")
    assert (xl.family, xl.cross_attention_dim, xl.vectors) == ("sdxl", 2048, 4)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"a": np.zeros((2, 8)), "b": np.zeros((2, 8))}, "not a textual-inversion embedding"),
        ({"emb_params": np.zeros((2, 3, 4))}, "an embedding is [vectors, width]"),
        ({"emb_params": np.zeros((80, 32))}, "80 vectors"),
        ({"emb_params": np.full((1, 32), np.nan)}, "NaN or infinite"),
        ({"emb_params": np.zeros((1, 1024))}, "Stable Diffusion 2.x"),
        ({"clip_l": np.zeros((2, 768)), "clip_g": np.zeros((3, 1280))}, "different vector counts"),
    ],
)
def test_not_an_embedding(tmp_path, tensors, message):
    with pytest.raises(InvalidUpload) as err:
        inspect_embedding(write(tmp_path, tensors), "t.safetensors")
    assert err.value.message.startswith("t.safetensors: ")
    assert message in err.value.message


@pytest.fixture(scope="module")
def flux_loras(tmp_path_factory):
    from pictale.engine.tiny.flux import build_tiny_flux
    from pictale.engine.tiny.flux_adapters import write_tiny_flux_loras

    return write_tiny_flux_loras(tmp_path_factory.mktemp("flux-loras"), build_tiny_flux("dev"))


@pytest.mark.parametrize("key", ["lora_flux_peft", "lora_flux_kohya", "lora_flux_aitoolkit", "lora_flux_xlabs"])
def test_the_tiny_flux_loras_in_every_format(flux_loras, key):
    info = inspect_lora(flux_loras[key], key)
    assert (info.family, info.rank) == ("flux", 12 if key == "lora_flux_kohya" else 4)


@pytest.mark.parametrize(
    "tensors",
    [
        pair("transformer.single_transformer_blocks.0.attn.to_k", 3072, 3072, "peft"),
        pair("transformer.transformer_blocks.0.attn.to_q", 3072, 3072, "peft"),  # double blocks only: Flux's width
        pair("transformer.x_embedder", 64, 3072, "peft") | {"transformer.x_embedder.alpha": np.float32(2)},
        pair("lora_unet_double_blocks_0_img_attn_qkv", 3072, 9216)
        | pair("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
        pair("lora_unet_single_blocks_3_linear1", 3072, 21504),
        pair("diffusion_model.double_blocks.0.img_attn.qkv", 3072, 9216),
        {
            "double_blocks.0.processor.qkv_lora1.down.weight": np.zeros((2, 3072)),
            "double_blocks.0.processor.qkv_lora1.up.weight": np.zeros((9216, 2)),
            "double_blocks.0.processor.proj_lora2.down.weight": np.zeros((2, 3072)),
            "double_blocks.0.processor.proj_lora2.up.weight": np.zeros((3072, 2)),
        },
        pair("lora_transformer_single_transformer_blocks_0_attn_to_q", 3072, 3072),
    ],
)
def test_real_sized_flux_loras_in_every_format(tmp_path, tensors):
    assert inspect_lora(write(tmp_path, tensors), "flux.safetensors").family == "flux"


def test_sd3_loras_stay_sd3(tmp_path):
    sd3 = pair("transformer.transformer_blocks.0.attn.to_q", 1536, 1536, "peft")
    sd3 |= pair("transformer.transformer_blocks.23.ff.net.2", 6144, 1536, "peft")
    assert inspect_lora(write(tmp_path, sd3), "sd3").family == "sd3"
    old_sd = pair("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora", 768, 320, "old")
    assert inspect_lora(write(tmp_path, old_sd), "sd").family == "sd15"  # `processor` alone is not XLabs


def test_the_engines_family_hint_agrees(tmp_path, flux_loras):
    from pictale.engine.checks.adapter_fit import lora_family_hint

    for path in flux_loras.values():
        assert lora_family_hint(path) == "flux"
    assert lora_family_hint(write(tmp_path, pair("transformer.transformer_blocks.0.attn.to_q", 3072, 3072, "peft")))
    assert lora_family_hint(
        write(tmp_path, pair("transformer.transformer_blocks.0.attn.to_q", 1536, 1536, "peft"))
    ) == ("sd3")
    assert lora_family_hint(write(tmp_path, pair("lora_unet_double_blocks_0_img_attn_qkv", 3072, 9216))) == "flux"
    assert lora_family_hint(write(tmp_path, pair("lora_te1_text_model_encoder_layers_0_mlp_fc1", 768, 3072))) == "sdxl"
