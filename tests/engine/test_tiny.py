import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    infer_diffusers_model_type,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from pictale.engine.configs import packaged_config_dir
from pictale.engine.models import load_pipeline, resolve_model
from pictale.engine.singlefile import (
    SD15_CLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    clip_to_ldm,
    openclip_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)
from pictale.engine.tiny import ensure_tiny_model, tiny_tokenizer, write_tiny_models


def _files(path):
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _image(pipe, prompt="a photo of a cat"):
    generator = torch.Generator("cpu").manual_seed(7)
    out = pipe(prompt, num_inference_steps=2, height=64, width=64, generator=generator, output_type="np")
    return out.images[0]


def test_writes_are_byte_identical(tiny_models, tmp_path):
    again = write_tiny_models(tmp_path)
    assert {"sd15", "sdxl", "sd15_single", "sdxl_single", "sd15_config", "sdxl_config"} <= set(again)
    assert {"ip_adapter", "controlnet", "lora_kohya", "lora_peft", "lora_sdxl", "embedding"} <= set(again)
    for key, path in tiny_models.items():
        assert _files(again[key]) == _files(path), key
    assert not list(tiny_models["sd15_config"].rglob("*.safetensors"))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_folder_and_single_file_give_the_same_image(tiny_models, tmp_path, family):
    folder = load_pipeline(resolve_model(str(tiny_models[family]), tmp_path))
    single_entry = resolve_model(str(tiny_models[f"{family}_single"]), tmp_path)
    assert single_entry.source == "single_file" and single_entry.family == family
    single = load_pipeline(single_entry)
    assert type(folder) is type(single)
    assert folder.safety_checker is None if family == "sd15" else not hasattr(folder, "safety_checker")
    a, b = _image(folder), _image(single)
    assert a.shape == (64, 64, 3) and a.std() > 0.01
    assert np.array_equal(a, b)


def test_tiny_tokenizer_is_trained_and_padded_like_clip():
    tok, tok2 = tiny_tokenizer(), tiny_tokenizer(pad_token="!")
    assert len(tok) == len(tok2) > 2
    assert tok.tokenize("a photo of a cat") == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    ids = tok("a photo of a cat").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok2.pad_token == "!" and tok.model_max_length == 77


def test_ensure_tiny_model_writes_once(tmp_path):
    folder = ensure_tiny_model(tmp_path)
    assert folder == tmp_path / "tiny-sd15"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ControlNet", "IP-Adapter", "Lora", "embeddings", "tiny-sd15"]
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == folder
    assert weights.stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_converter_round_trips_real_architectures(family):
    """On meta tensors: real SD 1.5 / SDXL shapes convert to keys diffusers' own loader maps back exactly."""
    config_dir = packaged_config_dir(family)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
    with torch.device("meta"):
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    unet_sd = unet.state_dict()
    ldm = unet_to_ldm(unet_sd, unet.config) | vae_to_ldm(vae.state_dict(), vae.config)
    if family == "sdxl":
        with torch.device("meta"):
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2"))
        ldm |= clip_to_ldm(te.state_dict(), SDXL_CLIP_PREFIX) | openclip_to_ldm(te2.state_dict())
        assert infer_diffusers_model_type(ldm) == "xl_base"
        back = convert_open_clip_checkpoint(te2, ldm, prefix="conditioner.embedders.1.model.")
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in te2.state_dict().items()}
    else:
        ldm |= clip_to_ldm(te.state_dict(), SD15_CLIP_PREFIX)
        assert infer_diffusers_model_type(ldm) == "v1"
        assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ldm
    unet_back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert set(unet_back) == set(unet_sd) and all(unet_back[k] is unet_sd[k] for k in unet_sd)
    vae_back = convert_ldm_vae_checkpoint(ldm, vae.config)
    assert {k: v.shape for k, v in vae_back.items()} == {k: v.shape for k, v in vae.state_dict().items()}
