"""Aspect-ratio buckets at the training resolution (kohya's and diffusers' idea, written here without torch).

Each bucket keeps about `resolution`² pixels with sides that are multiples of `step` (64, the latent patch a UNet
downsamples cleanly; 8 for the tiny test resolutions), from 1:2 to 2:1. A photo goes to the bucket nearest its
aspect ratio and is resized and centre-cropped to it.
"""

from __future__ import annotations

import math

from PIL import Image, ImageOps

MAX_RATIO = 2.0


def aspect_buckets(resolution: int, *, step: int = 64, max_ratio: float = MAX_RATIO) -> list[tuple[int, int]]:
    """(width, height) buckets of at most `resolution`² pixels, tallest first, widest last; always square too."""
    if resolution < 4 * step:
        step = 8
    area = resolution * resolution
    side = resolution // step * step or step
    found = {(side, side)}
    for width in range(side, int(resolution * math.sqrt(max_ratio)) + step, step):
        height = area // width // step * step
        if height >= step and width / height <= max_ratio:
            found |= {(width, height), (height, width)}  # landscape and its portrait twin
    return sorted(found, key=lambda wh: (wh[0] / wh[1], wh[0]))


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log ratio) to width:height; the first of equals."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda wh: abs(math.log(wh[0] / wh[1]) - ratio))


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Resize (Lanczos) and centre-crop `image` to exactly `bucket`."""
    return ImageOps.fit(image, bucket, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
