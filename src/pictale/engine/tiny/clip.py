"""A tiny seeded CLIP model (text and vision towers) for scoring book pages in tests and the offline demo.

Written like a real CLIP folder (`CLIPModel` + `CLIPProcessor` via save_pretrained), so tests load it through
the same `engine.clip_scoring.ClipScorer` code that loads `openai/clip-vit-large-patch14` or a local copy.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from pictale.engine.tiny import TINY_SEED, _seeded, tiny_tokenizer

TINY_CLIP_NAME = "tiny-clip"
_IMAGE_SIZE = 32


def build_tiny_clip(seed: int = TINY_SEED) -> tuple[CLIPModel, CLIPProcessor]:
    """CLIPModel with 32 px images (patch 8) and the tiny BPE tokenizer; projection dim 16."""
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            image_size=_IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    model = _seeded(seed + 7, lambda: CLIPModel(config))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE}, crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def write_tiny_clip(folder: Path) -> Path:
    """Save the tiny CLIP (model + processor) into `folder`; byte-identical on every call."""
    folder = Path(folder)
    model, processor = build_tiny_clip()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def ensure_tiny_clip(demo_dir: Path) -> Path:
    """`demo_dir/tiny-clip`, written on first use (`--clip-model tiny`, and beside the tiny demo model).

    In the demo dir, not under `models/CLIP/` where real CLIP models are found: a real model never pairs with it."""
    folder = Path(demo_dir) / TINY_CLIP_NAME
    if not (folder / "model.safetensors").is_file():
        write_tiny_clip(folder)
    return folder
