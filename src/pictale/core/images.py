"""Image decoding and the A1111 pre/post-processing of init images and masks (Pillow only, no torch)."""

from __future__ import annotations

import base64
import binascii
import io
import random
import re
import warnings
from collections.abc import Sequence

from PIL import Image, ImageFilter, ImageOps, ImageStat

from pictale.core.errors import InvalidImage

_SIZE = re.compile(r"^\s*(\d{1,30})\s*[xX×*]\s*(\d{1,30})\s*$")


NOT_AN_IMAGE = "not a decodable image (damaged, or not PNG, JPEG, WEBP, GIF or BMP)"


def parse_size(text: str) -> tuple[int, int] | None:
    """`"512x768"` (also `X`, `×`, `*`, spaces) as (width, height); None when it is not a size."""
    m = _SIZE.match(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def image_bytes(data: str | bytes, *, field: str = "image") -> bytes:
    """The bytes of raw base64, a `data:image/...;base64,` URL or raw bytes (URLs are never fetched)."""
    if isinstance(data, str):
        text = data.strip()
        if text.startswith("data:"):
            _, _, text = text.partition(",")
        if text.startswith(("http://", "https://")):
            raise InvalidImage(f"{field}: image URLs are not fetched; send the image as base64", param=field)
        try:
            raw = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImage(f"{field}: invalid base64 ({exc})", param=field) from exc
    else:
        raw = data
    if not raw:
        raise InvalidImage(f"{field}: empty image", param=field)
    return raw


def decode_image(data: str | bytes, *, field: str = "image", max_pixels: int = 4096 * 4096) -> Image.Image:
    """Decode raw base64, a data URL or raw bytes; the pixel limit is checked on the header, before decoding."""
    raw = image_bytes(data, field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = open_checked(raw, field=field, max_pixels=max_pixels)
            img.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(f"{field}: image too large to decode safely", param=field) from None
    except Exception:
        raise InvalidImage(f"{field}: {NOT_AN_IMAGE}", param=field) from None
    return img


def decode_images(
    items: Sequence[str | bytes], *, field: str, max_pixels: int, max_count: int
) -> tuple[Image.Image, ...]:
    """Several images of one field (`field[0]`, `field[1]`, ...), at most `max_count` of them."""
    if len(items) > max_count:
        raise InvalidImage(f"{field}: {len(items)} images sent, at most {max_count} are accepted", param=field)
    return tuple(decode_image(item, field=f"{field}[{i}]", max_pixels=max_pixels) for i, item in enumerate(items))


def open_checked(raw: bytes, *, field: str, max_pixels: int) -> Image.Image:
    """Open an image lazily (header only) and refuse it when it has more pixels than `max_pixels`."""
    try:
        img = Image.open(io.BytesIO(raw))
    except Exception:
        raise InvalidImage(f"{field}: {NOT_AN_IMAGE}", param=field) from None
    if img.width * img.height > max_pixels:
        raise InvalidImage(
            f"{field}: image is {img.width}x{img.height}, more than the limit of {max_pixels} pixels", param=field
        )
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def resize_image(mode: int, img: Image.Image, width: int, height: int) -> Image.Image:
    """A1111 resize modes: 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent (as 0 here)."""
    if mode == 1:
        return ImageOps.fit(img, (width, height), method=Image.Resampling.LANCZOS)
    if mode == 2:
        ratio = width / height
        src_ratio = img.width / img.height
        if ratio < src_ratio:
            fit_w, fit_h = width, max(1, round(width * img.height / img.width))
        else:
            fit_w, fit_h = max(1, round(height * img.width / img.height)), height
        resized = img.resize((fit_w, fit_h), Image.Resampling.LANCZOS)
        out = Image.new(img.mode, (width, height))
        out.paste(resized.resize((width, height), Image.Resampling.LANCZOS).filter(ImageFilter.BoxBlur(8)))
        out.paste(resized, ((width - fit_w) // 2, (height - fit_h) // 2))
        return out
    return img.resize((width, height), Image.Resampling.LANCZOS)


def mask_from_image(mask: Image.Image, *, invert: bool = False) -> Image.Image:
    """White = repaint. An RGBA mask with transparency uses its alpha channel (opaque = repaint), as A1111."""
    has_alpha = mask.mode in ("RGBA", "LA") and mask.getextrema()[-1][0] < 255
    m = mask.getchannel("A") if has_alpha else mask.convert("L")
    m = m.point(lambda v: 255 if v >= 128 else 0)
    return ImageOps.invert(m) if invert else m


def blur_mask(mask: Image.Image, blur: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask


def masked_region(mask: Image.Image, width: int, height: int, padding: int) -> tuple[int, int, int, int] | None:
    """The crop box for "only masked" inpainting: mask bbox + padding, grown to the target aspect ratio."""
    bbox = mask.getbbox()
    if bbox is None:
        return None
    x1, y1, x2, y2 = bbox
    x1, y1 = max(0, x1 - padding), max(0, y1 - padding)
    x2, y2 = min(mask.width, x2 + padding), min(mask.height, y2 + padding)
    ratio = width / height
    w, h = x2 - x1, y2 - y1
    if w / h < ratio:
        grow = round(h * ratio) - w
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
    else:
        grow = round(w / ratio) - h
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
    # Shift the box back inside the image where it can be, then clamp.
    if x1 < 0:
        x2, x1 = x2 - x1, 0
    if y1 < 0:
        y2, y1 = y2 - y1, 0
    if x2 > mask.width:
        x1, x2 = max(0, x1 - (x2 - mask.width)), mask.width
    if y2 > mask.height:
        y1, y2 = max(0, y1 - (y2 - mask.height)), mask.height
    return x1, y1, x2, y2


def fill_masked(img: Image.Image, mask: Image.Image, fill: int, seed: int) -> Image.Image:
    """A1111's "masked content": 0 fill (blurred surroundings), 1 original, 2 noise, 3 nothing (flat grey)."""
    if fill == 1:
        return img
    if fill == 0:
        keep = ImageOps.invert(mask)
        mean = ImageStat.Stat(img, mask=keep).mean if keep.getbbox() else [128, 128, 128]
        filler = Image.new("RGB", img.size, tuple(int(c) for c in mean[:3]))
        filler = Image.composite(img, filler, keep).filter(ImageFilter.GaussianBlur(8))
    elif fill == 2:
        rnd = random.Random(seed)
        filler = Image.frombytes("RGB", img.size, rnd.randbytes(img.width * img.height * 3))
    else:
        filler = Image.new("RGB", img.size, (128, 128, 128))
    return Image.composite(filler, img, mask)


def overlay_result(
    original: Image.Image,
    generated: Image.Image,
    mask: Image.Image,
    crop: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """Paste the generated pixels back over the original through the (blurred) mask, as A1111 does."""
    if crop is not None:
        region = generated.resize((crop[2] - crop[0], crop[3] - crop[1]), Image.Resampling.LANCZOS)
        full = original.copy()
        full.paste(region, crop[:2])
        generated = full
    else:
        generated = generated.resize(original.size, Image.Resampling.LANCZOS)
    return Image.composite(generated, original, mask.resize(original.size))
