"""FLUX.1 single files (safetensors, GGUF, ComfyUI all-in-one) with their T5, CLIP-L and VAE companions: found in
the ComfyUI/Forge layout, loaded through `engine.models`, placed by the memory modes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxKontextPipeline, FluxPipeline
from safetensors.torch import load_file, save_file

from pictale.core.config import Settings
from pictale.core.errors import ModelLoadError, UnsafeModelFile
from pictale.engine import models
from pictale.engine.configs import T5_TOKENIZER
from pictale.engine.families.flux.files import FluxOptions, flux_options, tensor_shapes
from pictale.engine.families.flux.memory import (
    GIB,
    apply_memory_mode,
    choose_memory_mode,
    component_bytes,
    fp8_candidates,
)
from pictale.engine.families.flux.variant import flux_variant
from pictale.engine.tiny.flux_files import write_tiny_flux_files

SEED = 7


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-models")
    return root, write_tiny_flux_files(root, "dev")


@pytest.fixture(scope="module")
def reference(dev):
    """The image of the same tiny model loaded as a diffusers folder."""
    _root, paths = dev
    return _run(FluxPipeline.from_pretrained(paths["folder"], local_files_only=True))


def _run(pipe) -> np.ndarray:
    out = pipe(
        "a red fox in the snow",
        num_inference_steps=2,
        guidance_scale=3.5,
        height=64,
        width=64,
        max_sequence_length=64,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
    )
    return out.images[0]


def _load(name: str, root: Path, **options):
    entry = models.resolve_model(name, root)
    assert (entry.family, entry.source) == ("flux", "single_file")
    return models.load_pipeline(entry, device="cpu", dtype=torch.float32, flux=FluxOptions(**options))


def test_transformer_file_with_companions_matches_the_folder_bit_for_bit(dev, reference):
    root, _paths = dev
    pipe = _load("tiny-flux-dev", root, models_dir=root)
    assert type(pipe) is FluxPipeline and pipe.pictale_memory_mode == "full on cpu"
    assert np.array_equal(_run(pipe), reference)
    # without a models dir, the companions are found from the file's place (models/unet -> models/)
    assert np.array_equal(_run(_load("tiny-flux-dev", root)), reference)


def test_comfy_all_in_one_file_loads_without_companions(dev, reference, tmp_path):
    _root, paths = dev
    alone = tmp_path / "Stable-diffusion"
    alone.mkdir()
    shutil.copy(paths["all_in_one"], alone)
    shutil.copytree(paths["all_in_one"].with_suffix(".config"), alone / "tiny-flux-dev-aio.config")
    assert np.array_equal(_run(_load("tiny-flux-dev-aio", tmp_path)), reference)


def test_gguf_q8_transformer_loads_and_draws_nearly_the_same_image(dev, reference):
    root, _paths = dev
    pipe = _load("tiny-flux-dev-Q8_0.gguf", root)
    weight = pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "GGUFParameter" and weight.dtype == torch.uint8
    image = _run(pipe)
    assert not np.array_equal(image, reference)
    assert np.abs(image - reference).max() < 0.02


def test_fp8_stored_transformer_file_loads_upcast(dev, tmp_path):
    _root, paths = dev
    unet = tmp_path / "unet"
    unet.mkdir()
    for sub, name in (("text_encoder", "clip"), ("text_encoder", "t5"), ("VAE", "vae")):
        (tmp_path / sub).mkdir(exist_ok=True)
        shutil.copy(paths[name], tmp_path / sub)
    state = load_file(str(paths["transformer"]))
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in state.items()}  # as Kijai's fp8 files
    save_file(fp8, str(unet / "tiny-flux-dev-fp8.safetensors"))
    shutil.copytree(paths["config"], unet / "tiny-flux-dev-fp8.config")
    pipe = _load("tiny-flux-dev-fp8", tmp_path)
    assert pipe.transformer.dtype == torch.float32
    assert np.isfinite(_run(pipe)).all()


def test_missing_companions_fail_at_selection_naming_each_file_and_folder(dev, tmp_path):
    _root, paths = dev
    unet = tmp_path / "unet"
    unet.mkdir()
    shutil.copy(paths["transformer"], unet)
    entry = models.resolve_model("tiny-flux-dev", tmp_path)  # listed: it fails when chosen
    with pytest.raises(ModelLoadError) as caught:
        models.load_pipeline(entry, flux=FluxOptions(models_dir=tmp_path))
    message = caught.value.message
    for name in ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn.safetensors", "clip_l.safetensors", "ae.safetensors"):
        assert name in message
    assert str(tmp_path / "text_encoder") in message and str(tmp_path / "VAE") in message
    assert "PICTALE_FLUX_VAE_FILE" in message
    # with T5 and CLIP in ComfyUI's text_encoders/ and clip/ folders, only the VAE is missing
    (tmp_path / "text_encoders").mkdir()
    (tmp_path / "clip").mkdir()
    shutil.copy(paths["t5"], tmp_path / "text_encoders")
    shutil.copy(paths["clip"], tmp_path / "clip")
    with pytest.raises(ModelLoadError) as caught:
        models.load_pipeline(entry, flux=FluxOptions(models_dir=tmp_path))
    assert "ae.safetensors" in caught.value.message and "clip_l" not in caught.value.message
    # configured names, and ComfyUI's lower-case vae/ folder
    (tmp_path / "vae").mkdir()
    shutil.copy(paths["vae"], tmp_path / "vae" / "flux-ae.safetensors")
    options = FluxOptions(models_dir=tmp_path, vae_files=("flux-ae.safetensors",))
    with pytest.raises(ModelLoadError, match=r"do not fit the FLUX\.1 dev config"):  # the packaged (real) config
        models.load_pipeline(entry, flux=options)
    shutil.copytree(paths["config"], unet / paths["config"].name)
    assert type(models.load_pipeline(entry, flux=options)) is FluxPipeline


def test_pickle_files_beside_flux_files_are_refused_and_never_listed(dev, tmp_path):
    _root, paths = dev
    unet = tmp_path / "unet"
    unet.mkdir()
    shutil.copy(paths["transformer"], unet)
    for name in ("flux1-dev.ckpt", "flux1-dev.pt"):
        (unet / name).write_bytes(b"not a pickle: opening it would fail loudly")
        with pytest.raises(UnsafeModelFile):
            models.resolve_model(str(unet / name), tmp_path)
    skipped: dict[str, str] = {}
    listed = models.scan_checkpoints(tmp_path / "Stable-diffusion", skipped)
    assert [e.title.split(" [")[0] for e in listed] == ["tiny-flux-dev.safetensors"] and not skipped


def test_scan_lists_flux_files_of_unet_and_skips_sd_unets_there_silently(dev):
    root, _paths = dev
    unet = root / "unet"
    save_file({"input_blocks.0.0.weight": torch.zeros(4, 4)}, str(unet / "sd15-unet-only.safetensors"))
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4)}, str(unet / "sd-no-te.safetensors"))
    skipped: dict[str, str] = {}
    entries = models.scan_checkpoints(root / "Stable-diffusion", skipped)
    names = sorted(e.title.split(" [")[0] for e in entries)
    assert names == ["tiny-flux-dev-Q8_0.gguf", "tiny-flux-dev-aio.safetensors", "tiny-flux-dev.safetensors"]
    assert {e.family for e in entries} == {"flux"} and not skipped
    assert all(Path(e.filename).is_file() for e in entries)  # the .config dirs are no models


def test_flux_fill_and_control_files_are_refused_by_their_input_width():
    lora = {"single_transformer_blocks.0.attn.to_q.lora_A.weight": {}, "x_embedder.lora_A.weight": {}}
    with pytest.raises(ModelLoadError, match="no UNet weights"):  # a Flux LoRA is no Flux model
        models.family_from_keys(lora, "flux-lora.safetensors")
    header = {"x_embedder.weight": {"shape": [3072, 384]}, "single_transformer_blocks.0.norm.linear.weight": {}}
    with pytest.raises(ModelLoadError, match="Fill"):
        models.family_from_keys(header, "flux1-fill-dev.safetensors")
    bfl = {"model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": {"shape": [128]}}
    assert models.family_from_keys({**bfl, "model.diffusion_model.img_in.weight": {"shape": [3072, 64]}}) == "flux"
    with pytest.raises(ModelLoadError, match="Canny/Depth"):
        models.family_from_keys({**bfl, "model.diffusion_model.img_in.weight": {"shape": [3072, 128]}})


def test_variants_of_single_files(dev, tmp_path):
    _root, paths = dev
    assert flux_variant(paths["transformer"], tensor_shapes(paths["transformer"])) == "dev"
    assert flux_variant(paths["gguf"], tensor_shapes(paths["gguf"])) == "dev"
    schnell = write_tiny_flux_files(tmp_path / "s", "schnell", gguf=False, all_in_one=False)
    assert flux_variant(schnell["transformer"], tensor_shapes(schnell["transformer"])) == "schnell"
    kontext = write_tiny_flux_files(tmp_path / "k", "kontext", gguf=False, all_in_one=False)
    assert flux_variant(kontext["transformer"], tensor_shapes(kontext["transformer"])) == "kontext"  # sidecar
    assert type(_load("tiny-flux-kontext", tmp_path / "k")) is FluxKontextPipeline


@pytest.mark.parametrize(
    ("setting", "cuda", "free_gib", "expected"),
    [
        ("auto", False, 0, "full"),  # the CPU
        ("auto", True, 79, "full"),  # 80 GB
        ("auto", True, 39.5, "full"),  # 40 GB: bf16 weights (31.5) + activations fit
        ("auto", True, 31, "offload"),  # 32 GB: the transformer (22.2) alone fits
        ("auto", True, 23.2, "fp8"),  # 24 GB
        ("auto", True, 15.3, "fp8"),  # 16 GB: the fp8 transformer (11.1) plus headroom
        ("auto", True, 11.3, "sequential"),  # 12 GB
        ("fp8", False, 0, "fp8"),  # a set mode is kept (apply_memory_mode drops offload on the CPU)
        ("sequential", True, 80, "sequential"),
    ],
)
def test_memory_mode_choice_from_free_vram(setting, cuda, free_gib, expected):
    # FLUX.1-dev in bf16: transformer 11.9 G params, T5-XXL 4.8 G, CLIP-L 0.12 G, VAE 84 M
    sizes = {"transformer": int(22.2 * GIB), "text_encoder_2": int(8.9 * GIB), "text_encoder": int(0.23 * GIB)}
    sizes["vae"] = int(0.16 * GIB)
    fp8 = {"transformer": int(11.1 * GIB), "text_encoder_2": int(4.45 * GIB)}
    got = choose_memory_mode(setting, cuda=cuda, free_bytes=int(free_gib * GIB), sizes=sizes, fp8_bytes=fp8)
    assert got == expected


def test_memory_mode_with_a_gguf_transformer_on_a_12_gb_card():
    sizes = {"transformer": int(6.5 * GIB), "text_encoder_2": int(8.9 * GIB), "vae": GIB // 4}
    fp8 = {"text_encoder_2": int(4.45 * GIB)}  # GGUF weights are not cast again
    assert choose_memory_mode("auto", cuda=True, free_bytes=int(11.3 * GIB), sizes=sizes, fp8_bytes=fp8) == "fp8"
    with pytest.raises(ValueError, match="flux_memory"):
        choose_memory_mode("lots", cuda=True, free_bytes=0, sizes=sizes)


def test_fp8_storage_runs_on_the_cpu_and_shrinks_the_weights(dev, reference):
    root, _paths = dev
    full = _load("tiny-flux-dev", root)
    pipe = _load("tiny-flux-dev", root, memory="fp8")
    assert pipe.pictale_memory_mode.startswith("full on cpu, fp8 storage (transformer, text_encoder_2)")
    before, after = component_bytes(full), component_bytes(pipe)
    assert after["transformer"] < 0.6 * before["transformer"]
    assert after["text_encoder_2"] < before["text_encoder_2"] and after["vae"] == before["vae"]
    estimate = fp8_candidates(full)  # what `auto` counts on before casting
    assert estimate == {"transformer": after["transformer"], "text_encoder_2": after["text_encoder_2"]}
    image = _run(pipe)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    assert np.abs(image - reference).max() < 0.2


def test_offload_modes_fall_back_to_full_without_cuda(dev):
    root, _paths = dev
    for mode in ("offload", "sequential"):
        pipe = _load("tiny-flux-dev", root, memory=mode)
        assert pipe.pictale_memory_mode == f"full on cpu, {mode} needs CUDA: full"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="model and sequential offload need CUDA (none here)")
@pytest.mark.parametrize("mode", ["offload", "fp8", "sequential"])
def test_offload_modes_on_cuda(dev, reference, mode):
    root, _paths = dev
    pipe = _load("tiny-flux-dev", root, memory="full")  # loaded on the CPU first, then placed
    pipe.to("cpu")
    applied = apply_memory_mode(pipe, mode, "cuda")
    assert "offload" in applied and "VAE tiling" in applied
    assert np.abs(_run(pipe) - reference).max() < 0.2


def test_settings_name_companions_and_memory_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("PICTALE_FLUX_T5_FILE", "t5xxl_fp8_e4m3fn.safetensors, /data/t5.safetensors")
    settings = Settings(data_dir=tmp_path, flux_memory="FP8")
    options = flux_options(settings)
    assert options.t5_files == ("t5xxl_fp8_e4m3fn.safetensors", "/data/t5.safetensors")
    assert options.clip_files == ("clip_l.safetensors",) and options.vae_files == ("ae.safetensors",)
    assert options.memory == "fp8" and options.models_dir == tmp_path / "models"


def test_packaged_t5_tokenizer_is_t5_v1_1():
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast.from_pretrained(T5_TOKENIZER)
    assert len(tokenizer) == 32100 and tokenizer.model_max_length == 512
    assert tokenizer("Hello world").input_ids == [8774, 296, 1]
    digest = hashlib.sha256((T5_TOKENIZER / "tokenizer.json").read_bytes()).hexdigest()
    readme = (T5_TOKENIZER.parent / "README.md").read_text(encoding="utf-8")
    assert digest in readme


def test_packaged_flux_configs_describe_the_real_models():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pictale.engine.configs import flux_config

    for variant, guided in (("schnell", False), ("dev", True), ("kontext", True)):
        config = FluxTransformer2DModel.load_config(flux_config(variant), subfolder="transformer")
        assert config["guidance_embeds"] is guided and config["num_layers"] == 19
    folder = flux_config("dev")
    with init_empty_weights():  # meta tensors: the real sizes without the memory
        counts = {
            "transformer": FluxTransformer2DModel.from_config(
                FluxTransformer2DModel.load_config(folder, subfolder="transformer")
            ),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae")),
            "clip": CLIPTextModel(CLIPTextConfig.from_json_file(str(folder / "text_encoder" / "config.json"))),
            "t5": T5EncoderModel(T5Config.from_json_file(str(folder / "text_encoder_2" / "config.json"))),
        }
    params = {k: sum(p.numel() for p in m.parameters()) / 1e9 for k, m in counts.items()}
    assert 11.8 < params["transformer"] < 12.0 and 4.85 < params["t5"] < 4.95  # 9.79 GB in fp16
    assert 0.12 < params["clip"] < 0.13 and 0.08 < params["vae"] < 0.09
