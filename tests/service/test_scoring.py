"""Where the book scorer's CLIP model comes from, and what a book says without one."""

from __future__ import annotations

from pictale.core.config import Settings
from pictale.engine.tiny.clip import write_tiny_clip
from pictale.service.scoring import ScorerHolder


def test_no_clip_model_is_said_not_downloaded(tmp_path):
    holder = ScorerHolder(Settings(data_dir=tmp_path))
    assert holder.source() is None and holder.get() is None
    assert holder.error == (
        f"no CLIP model: put one (e.g. openai/clip-vit-base-patch32) in {tmp_path / 'models' / 'CLIP'}/ "
        "or start with --clip-model PATH_OR_HUB_ID"
    )


def test_sources_in_order(tmp_path):
    settings = Settings(data_dir=tmp_path)
    demo = {"on": True}
    holder = ScorerHolder(settings, lambda: demo["on"])
    assert holder.source() == str(tmp_path / "demo" / "tiny-clip")  # beside the demo model: the tiny CLIP
    assert holder.get() is not None and holder.error is None
    local = write_tiny_clip(tmp_path / "models" / "CLIP" / "my-clip")
    assert holder.source() == str(local)  # a CLIP folder in the models dir wins over the demo pairing
    demo["on"] = False
    (local / "config.json").unlink()
    assert holder.source() is None and holder.get() is None  # the tiny demo CLIP is never found as "local"
    named = ScorerHolder(Settings(data_dir=tmp_path, clip_model=str(tmp_path / "nowhere")))
    assert named.get() is None and "nowhere does not exist" in named.error
