"""Model captions on the worker: a tiny BLIP built here (random weights, biased to one word) stands in for one."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pictale.training.captioner import caption_photos, model_text
from pictale.training.spec import PreparedPhoto, TrainingSpec

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "woman", "in", "the", "park", "red", "hat"]


def spec(kind: str = "face") -> TrainingSpec:
    return TrainingSpec(name="s", trigger="sks", kind=kind, base_model="m", family="sd15")


def test_model_text_keeps_what_varies_and_drops_identity_words():
    assert model_text("a photo of a woman in the park", spec()) == "sks person, in the park"
    assert model_text("arafed man with a red hat", spec("character")) == "sks person, with a red hat"
    assert model_text("a woman", spec()) == ""
    assert model_text("A painting of a woman in a field.", spec("style")) == "sks person, a woman in a field"


def tiny_blip(folder: Path, word: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    image_processor = transformers.BlipImageProcessor(size={"height": 32, "width": 32})
    processor = transformers.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = {
        "vocab_size": len(WORDS),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": 40,
        "bos_token_id": 2,
        "sep_token_id": 3,
        "pad_token_id": 0,
        "eos_token_id": 3,
    }
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    model = transformers.BlipForConditionalGeneration(
        transformers.BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    )
    with torch.no_grad():  # random weights say nothing; a bias makes them say `word`
        model.text_decoder.cls.predictions.bias[WORDS.index(word)] = 100.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def test_template_captions_are_replaced_by_a_local_model(tmp_path: Path):
    tiny_blip(tmp_path / "models" / "captioner", "park")
    photos = []
    for i, caption_from in enumerate(("template", "file")):
        path = tmp_path / f"{i:04d}.png"
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(path)
        path.with_suffix(".txt").write_text("old")
        photos.append(PreparedPhoto(str(path), "old", f"{i}.jpg", 64, 64, caption_from))
    out = caption_photos(photos, spec(), tmp_path / "models", max_new_tokens=3)
    assert out[0].caption_from == "model" and out[0].caption == "sks person, park park park"
    assert Path(out[0].path).with_suffix(".txt").read_text() == out[0].caption
    assert out[1] == photos[1]  # the user's caption stays
    assert caption_photos(photos, spec(), tmp_path / "elsewhere") == photos  # no model: templates stay
