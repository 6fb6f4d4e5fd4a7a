"""A tiny seeded Stable Diffusion 3 pipeline built from configs, written as a diffusers folder.

Shapes follow diffusers' own SD3 pipeline tests, scaled so 64 px images take a few milliseconds per step:
two CLIP text encoders with projection (hidden 32, projection 32: pooled width 64), a T5 encoder (d_model 64,
the joint attention width, which the concatenated CLIP embeddings are padded to), an SD3Transformer2DModel
(patch 2, 4 heads of 8, 2 layers), a 16-channel VAE with factor 8 and SD3's shift/scaling factors, and
FlowMatchEulerDiscreteScheduler(shift=3). Build and save take about 0.2 s; the folder is about 6.5 MB.

The T5 tokenizer is a Unigram model whose vocabulary is counted from a small English corpus (every word a
token, every character a fallback piece), wrapped as transformers' T5Tokenizer so it saves and loads like
a real one. Counting rather than `tokenizers.UnigramTrainer` keeps the files byte-identical every run.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from pathlib import Path

from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from pictale.engine.clip_tokenizer import TINY_CORPUS

TINY_SD3_NAME = "tiny-sd3"
T5_MAX_LENGTH = 512

_STORY_WORDS = (
    "the a an and or but of in on at to from with without for by over under near behind before after "
    "is are was were be been has have had do does did will can could would should may might must "
    "i you he she it we they me him her us them my your his its our their this that these those "
    "girl boy man woman child children friend friends mother father king queen princess prince knight "
    "cat dog fox bear wolf bird horse dragon mouse rabbit owl fish lion tiger elephant "
    "house castle tower village city forest tree trees river lake sea ocean mountain hill field garden "
    "road bridge door window room table chair bed book lamp candle sword shield boat ship "
    "sky sun moon star stars cloud clouds rain snow wind fire water light shadow night day morning evening "
    "red orange yellow green blue purple pink brown black white gray golden silver "
    "big small little tall short old young happy sad angry brave kind dark bright warm cold soft "
    "beautiful detailed painting photo portrait illustration watercolor cartoon style drawing sketch "
    "walk walks walking run runs running sit sits sitting stand stands standing fly flies flying "
    "look looks looking hold holds holding read reads reading smile smiles laugh laughs sleep sleeps "
    "long hair eyes face hands dress coat hat boots cape wearing "
    "one two three four five many some every all together alone home far away up down "
    "quality best masterpiece blurry text watermark cinematic lighting"
)


def t5_corpus_words() -> list[str]:
    """Words of the tiny CLIP corpus and a story word list, with their counts' order fixed."""
    words: Counter[str] = Counter()
    for line in (*TINY_CORPUS, _STORY_WORDS):
        for word in line.lower().replace(",", " ").replace(".", " ").replace(";", " ").split():
            words[word] += 1
    return sorted(words, key=lambda w: (-words[w], w))


def tiny_t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces with log-probability scores: specials (<pad> 0, </s> 1, <unk> 2), words, characters."""
    words = t5_corpus_words()
    total = len(words) + 1
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", math.log(1 / total))]
    # A whole word (one piece) always beats spelling it out, so known words become single tokens.
    vocab += [(f"▁{w}", math.log(1 / total)) for w in words]
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab += [(f"▁{c}", -20.0) for c in chars]
    seen = {piece for piece, _ in vocab}
    vocab += [(c, -21.0) for c in chars if c not in seen]
    return vocab


def tiny_t5_tokenizer() -> T5Tokenizer:
    """T5Tokenizer over `tiny_t5_vocab()` (no sentinel ids), max length 512 like SD3's."""
    tokenizer = T5Tokenizer(vocab=tiny_t5_vocab(), extra_ids=0, model_max_length=T5_MAX_LENGTH)
    assert len(tokenizer) > 2, "tiny T5 tokenizer came out empty"
    return tokenizer


def _t5_encoder(tokenizer: T5Tokenizer, seed: int) -> T5EncoderModel:
    from pictale.engine.tiny import _seeded

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=64,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return _seeded(seed, lambda: T5EncoderModel(config))


def build_tiny_sd3(seed: int = 1234) -> StableDiffusion3Pipeline:
    """An SD3-shaped pipeline (CLIP-L/G-like encoders with projection, T5, MMDiT, 16-channel VAE), seeded."""
    from pictale.engine.tiny import _seeded, _text_encoder, _vae, tiny_tokenizer

    tokenizer, tokenizer_2, tokenizer_3 = tiny_tokenizer(), tiny_tokenizer(pad_token="!"), tiny_t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: SD3Transformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=64,
            caption_projection_dim=32,
            pooled_projection_dim=64,
            out_channels=16,
        ),
    )
    vae = _vae(seed + 1, 1.5305, 16, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=_text_encoder(tokenizer, seed + 2, hidden=32, act="quick_gelu", with_projection=True),
        tokenizer=tokenizer,
        text_encoder_2=_text_encoder(tokenizer_2, seed + 3, hidden=32, act="gelu", with_projection=True),
        tokenizer_2=tokenizer_2,
        text_encoder_3=_t5_encoder(tokenizer_3, seed + 4),
        tokenizer_3=tokenizer_3,
    )


def write_tiny_sd3(root: Path, seed: int = 1234) -> tuple[Path, StableDiffusion3Pipeline]:
    """Build the tiny SD3 and save it as `root/tiny-sd3/` (diffusers layout, safetensors); (folder, pipe)."""
    from pictale.engine.tiny import _save_folder

    pipe = build_tiny_sd3(seed)
    folder = Path(root) / TINY_SD3_NAME
    _save_folder(pipe, folder)
    return folder, pipe
