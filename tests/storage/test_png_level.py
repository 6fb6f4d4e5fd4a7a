"""PNG compression level (`Settings.png_compress_level`): same pixels at every level; the level changes the size."""

import io

import numpy as np
import pytest
from PIL import Image

from pictale.core.config import Settings
from pictale.storage.infotext import encode_image, read_infotext


def _image() -> Image.Image:
    # smooth gradients plus a little noise: compressible, like a generated picture, unlike pure noise
    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(3)
    rgb = np.stack([x, y, (x + y) // 2], axis=-1) + rng.integers(0, 8, (256, 256, 3))
    return Image.fromarray(rgb.clip(0, 255).astype("uint8"))


def test_every_level_decodes_to_the_same_pixels_and_keeps_the_infotext():
    img = _image()
    sizes = {}
    for level in range(10):
        data = encode_image(img, "a cat\nSteps: 20", "png", compress_level=level)
        decoded = Image.open(io.BytesIO(data))
        assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(img))
        assert read_infotext(data)[0] == "a cat\nSteps: 20"
        sizes[level] = len(data)
    assert sizes[0] > sizes[1] > sizes[9]  # 0 stores, 1 compresses fast, 9 smallest
    assert sizes[0] >= 256 * 256 * 3


def test_setting_default_and_range():
    assert Settings().png_compress_level == 1
    assert Settings(png_compress_level=9).png_compress_level == 9
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="png_compress_level must be between 0 and 9"):
            Settings(png_compress_level=bad)
