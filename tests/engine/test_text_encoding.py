"""A1111-style prompt encoding against tiny in-memory SD 1.5 and SDXL pipelines."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from tokenizers.trainers import BpeTrainer  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from pictale.engine.text_encoding import encode_prompts, prompt_chunks  # noqa: E402

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CORPUS = [
    "a photo of a cat, a dog sitting on a red chair",
    "a castle on a hill at sunset, watercolor painting",
    "masterpiece, best quality, blurry, low quality",
]
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE trained on a few lines with CLIP's normalizer and pre-tokenizer (offline-models.md §2)."""
    tok = Tokenizer(BPE(unk_token=EOS, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=400,
        special_tokens=[BOS, EOS],
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    return model["vocab"], merges


def _text_encoder(cls, tokenizer: CLIPTokenizer, seed: int):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=32,
    )
    return cls(config).eval()


def _unet_vae(cross_dim: int, xl: bool):
    torch.manual_seed(0)
    extra = (
        {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
        }
        if xl
        else {}
    )
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim,
        attention_head_dim=2,
        **extra,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    return unet, vae


@pytest.fixture(scope="module")
def vocab():
    return _tiny_vocab()


@pytest.fixture(scope="module")
def sd15(vocab):
    tokenizer = CLIPTokenizer(vocab=vocab[0], merges=vocab[1], model_max_length=77)
    assert len(tokenizer) > 2
    unet, vae = _unet_vae(32, xl=False)
    return diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=_text_encoder(CLIPTextModel, tokenizer, 1),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def sdxl(vocab):
    tokenizer = CLIPTokenizer(vocab=vocab[0], merges=vocab[1], model_max_length=77)
    tokenizer_2 = CLIPTokenizer(vocab=vocab[0], merges=vocab[1], model_max_length=77, pad_token="!")
    unet, vae = _unet_vae(64, xl=True)
    return diffusers.StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=_text_encoder(CLIPTextModel, tokenizer, 1),
        text_encoder_2=_text_encoder(CLIPTextModelWithProjection, tokenizer_2, 2),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler(),
        image_encoder=None,
        feature_extractor=None,
    )


def _cond(pipe, prompt: str, negative: str = "", **kw):
    return encode_prompts(pipe, [prompt], [negative], **kw)["prompt_embeds"]


LONG = " ".join(["a cat"] * 100)  # 200 single-token words, no commas


# --- chunking ---------------------------------------------------------------------------------------------


def test_chunks_long_prompt_and_break(sd15) -> None:
    tok = sd15.tokenizer
    assert [len(c[0]) for c in prompt_chunks(tok, LONG)] == [75, 75, 50]
    assert [len(c[0]) for c in prompt_chunks(tok, "a cat BREAK a dog")] == [2, 2]
    assert [len(c[0]) for c in prompt_chunks(tok, "")] == [0]
    tokens, weights = prompt_chunks(tok, "a (cat:1.5)")[0]
    assert weights == [1.0] * (len(tokens) - 1) + [1.5]


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(sd15) -> None:
    tok = sd15.tokenizer
    comma = tok.get_vocab()[",</w>"]
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = prompt_chunks(tok, text)
    assert [len(c[0]) for c in chunks] == [71, 10]  # 70 cats and the comma, then all 10 dogs together
    assert chunks[0][0][-1] == comma
    far = " ".join(["cat"] * 40) + ", " + " ".join(["dog"] * 40)  # comma 34 tokens back: no backtrack
    assert [len(c[0]) for c in prompt_chunks(tok, far)] == [75, 6]


# --- parity with diffusers for ordinary prompts ---------------------------------------------------------


def test_sd15_plain_prompt_matches_diffusers(sd15) -> None:
    ours = encode_prompts(sd15, ["a photo of a cat"], ["blurry"])
    ref, ref_neg = sd15.encode_prompt("a photo of a cat", "cpu", 1, True, negative_prompt="blurry")
    assert set(ours) == {"prompt_embeds", "negative_prompt_embeds"}
    assert torch.equal(ours["prompt_embeds"], ref)
    assert torch.equal(ours["negative_prompt_embeds"], ref_neg)
    empty = encode_prompts(sd15, ["a cat", "a red chair"], ["", ""])
    ref, ref_neg = sd15.encode_prompt(["a cat", "a red chair"], "cpu", 1, True)
    assert torch.allclose(empty["prompt_embeds"], ref, atol=1e-5)
    assert torch.allclose(empty["negative_prompt_embeds"], ref_neg, atol=1e-5)


def test_sdxl_plain_prompt_matches_diffusers(sdxl) -> None:
    ours = encode_prompts(sdxl, ["a photo of a cat"], [""])
    ref = sdxl.encode_prompt("a photo of a cat", device="cpu", num_images_per_prompt=1)
    names = [
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ]
    assert set(ours) == set(names)
    for name, expected in zip(names, ref, strict=True):
        assert torch.equal(ours[name], expected), name
    assert not ours["negative_prompt_embeds"].any()  # empty negative is zeroed, as A1111 and diffusers do
    ours = encode_prompts(sdxl, ["a photo of a cat"], ["blurry"])
    ref = sdxl.encode_prompt("a photo of a cat", device="cpu", negative_prompt="blurry")
    for name, expected in zip(names, ref, strict=True):
        assert torch.equal(ours[name], expected), name


# --- long prompts, BREAK, weights ------------------------------------------------------------------------


@pytest.mark.parametrize("pipe_name", ["sd15", "sdxl"])
def test_long_prompt_is_chunked_not_truncated(pipe_name: str, request) -> None:
    pipe = request.getfixturevalue(pipe_name)
    out = encode_prompts(pipe, [LONG], [""])
    assert out["prompt_embeds"].shape[:2] == (1, 231)
    assert out["negative_prompt_embeds"].shape == out["prompt_embeds"].shape
    changed = _cond(pipe, LONG[: -len("cat")] + "dog")
    # chunks are encoded on their own (batched matmuls may differ in the last bit, hence allclose)
    assert torch.allclose(changed[:, :154], out["prompt_embeds"][:, :154], atol=1e-6)
    assert not torch.allclose(changed[:, 154:], out["prompt_embeds"][:, 154:])


@pytest.mark.parametrize("pipe_name", ["sd15", "sdxl"])
def test_break_starts_a_new_chunk(pipe_name: str, request) -> None:
    pipe = request.getfixturevalue(pipe_name)
    broken = _cond(pipe, "a cat BREAK a red chair")
    assert broken.shape[1] == 154
    assert torch.allclose(broken[:, :77], _cond(pipe, "a cat"), atol=1e-6)
    assert torch.allclose(broken[:, 77:], _cond(pipe, "a red chair"), atol=1e-6)


def test_weights_change_embeddings_and_keep_the_mean(sd15) -> None:
    plain = _cond(sd15, "a photo of a cat")
    assert torch.equal(_cond(sd15, "a photo of a (cat:1.0)"), plain)
    weighted = _cond(sd15, "a photo of a (cat:1.5)")
    assert not torch.allclose(weighted, plain)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)  # "Original" emphasis rescale
    assert not torch.allclose(_cond(sd15, "a photo of a [cat]"), plain)


def test_sdxl_weights_change_embeddings_not_pooled(sdxl) -> None:
    plain = encode_prompts(sdxl, ["a photo of a cat"], [""])
    weighted = encode_prompts(sdxl, ["a photo of a (cat:1.5)"], [""])
    assert not torch.allclose(weighted["prompt_embeds"], plain["prompt_embeds"])
    assert torch.equal(weighted["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])


# --- padding, batches, cache, clip skip -------------------------------------------------------------------


def test_cond_and_uncond_padded_to_equal_length(sd15, sdxl) -> None:
    out = encode_prompts(sd15, ["a cat"], [LONG])
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (1, 231, 32)
    empty = _cond(sd15, "")
    assert torch.equal(out["prompt_embeds"][:, 77:154], empty)  # padded with the empty prompt's chunk
    assert torch.equal(out["prompt_embeds"][:, 154:], empty)
    xl = encode_prompts(sdxl, [LONG], [""])
    assert xl["negative_prompt_embeds"].shape == (1, 231, 64)
    assert not xl["negative_prompt_embeds"].any()
    xl = encode_prompts(sdxl, ["a cat"], [LONG])
    assert xl["prompt_embeds"].shape == xl["negative_prompt_embeds"].shape == (1, 231, 64)
    assert xl["pooled_prompt_embeds"].shape == xl["negative_pooled_prompt_embeds"].shape == (1, 32)


def test_batch_of_different_lengths(sd15) -> None:
    out = encode_prompts(sd15, ["a cat", LONG], ["blurry", ""])
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (2, 231, 32)
    assert torch.equal(out["prompt_embeds"][1:], _cond(sd15, LONG))
    assert torch.equal(out["prompt_embeds"][:1, :77], _cond(sd15, "a cat"))


def test_identical_prompts_encode_once(sd15) -> None:
    calls = []
    handle = sd15.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = encode_prompts(sd15, ["a cat", "a cat", "a cat"], ["", "", ""])
    finally:
        handle.remove()
    assert len(calls) == 2  # "a cat" once, "" once
    assert torch.equal(out["prompt_embeds"][0], out["prompt_embeds"][2])


def test_clip_skip(sd15, sdxl) -> None:
    one, two = _cond(sd15, "a photo of a cat"), _cond(sd15, "a photo of a cat", clip_skip=2)
    assert not torch.allclose(one, two)
    # A1111's clip skip 2 is the penultimate layer + final norm: diffusers' clip_skip=1.
    te = sd15.text_encoder
    ids = sd15.tokenizer("a photo of a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = te.final_layer_norm(te(ids, output_hidden_states=True).hidden_states[-2])
    assert torch.allclose(two, ref, atol=1e-6)
    # SDXL always uses the penultimate layer, as A1111 does by default: clip skip has no effect.
    assert torch.equal(_cond(sdxl, "a cat", clip_skip=2), _cond(sdxl, "a cat"))


def test_mismatched_batch_is_rejected(sd15) -> None:
    with pytest.raises(ValueError):
        encode_prompts(sd15, ["a", "b"], [""])


# --- end to end -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipe_name", ["sd15", "sdxl"])
def test_pipeline_runs_with_the_returned_kwargs(pipe_name: str, request) -> None:
    pipe = request.getfixturevalue(pipe_name)
    kwargs = encode_prompts(pipe, ["a (cat:1.3) BREAK " + LONG], ["blurry, low quality"])
    image = pipe(
        **kwargs,
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 64, 64, 3)
    assert not (image != image).any()  # no NaNs
