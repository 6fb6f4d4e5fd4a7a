"""`pictale serve`'s gallery options reach Settings: a bad value is one line naming the flag or the variable."""

from __future__ import annotations

from tests.cli.test_startup import lines, pictale


def test_bad_gallery_limits_are_one_line(tmp_path):
    r = pictale("serve", "--gallery-days", -1, "--data-dir", tmp_path)
    assert r.returncode == 2 and lines(r) == ["error: --gallery-days: must be 0 (no limit) or more (got -1.0)"]
    r = pictale("serve", "--no-gallery", "--data-dir", tmp_path, env={"PICTALE_GALLERY_MAX_IMAGES": "-3"})
    assert r.returncode == 2
    assert lines(r) == ["error: PICTALE_GALLERY_MAX_IMAGES: must be 0 (no limit) or more (got '-3')"]
