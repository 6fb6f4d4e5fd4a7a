"""`pictale serve`'s speed and memory options reach Settings; a bad value is one line naming the flag or variable."""

from __future__ import annotations

import pytest

from pictale.core.config import Settings
from pictale.engine.speed import speed_options
from tests.cli.test_startup import lines, pictale


def test_help_lists_the_speed_flags():
    r = pictale("serve", "--help", env={"COLUMNS": "200"})
    for flag in ("--compile", "--compile-sizes", "--compile-lora-rank", "--compile-lora-slots", "--low-vram",
                 "--png-compress-level"):  # fmt: skip
        assert flag in r.stdout


def test_bad_speed_values_are_one_line(tmp_path):
    r = pictale("serve", "--compile", "--compile-sizes", "512x51", "--data-dir", tmp_path)
    assert r.returncode == 2
    assert lines(r) == ["error: --compile-sizes: size '512x51': width and height must be multiples of 8 (at least "
                        "8) (got '512x51')"]  # fmt: skip
    r = pictale("serve", "--data-dir", tmp_path, env={"PICTALE_PNG_COMPRESS_LEVEL": "12"})
    assert r.returncode == 2
    assert lines(r) == ["error: PICTALE_PNG_COMPRESS_LEVEL: png_compress_level must be between 0 and 9 (got '12')"]


def test_settings_become_engine_options(monkeypatch):
    monkeypatch.setenv("PICTALE_COMPILE", "1")
    monkeypatch.setenv("PICTALE_COMPILE_SIZES", "512x512, 768x512,512x512")
    options = speed_options(Settings(low_vram=True, compile_lora_rank=32))
    assert options.compile and options.low_vram and options.lora_rank == 32 and options.lora_slots == 2
    assert options.sizes == ((512, 512), (768, 512)) and options.backend == "inductor"
    monkeypatch.delenv("PICTALE_COMPILE")
    assert speed_options(Settings()).active is False


@pytest.mark.parametrize("bad", ["512", "axb", "512x0", ","])
def test_compile_sizes_must_be_sizes(bad):
    with pytest.raises(ValueError):
        Settings(compile_sizes=bad)
