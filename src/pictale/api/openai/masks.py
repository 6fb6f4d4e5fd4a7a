"""OpenAI's edit masks as pictale's (white = repaint): alpha 0 marks the area to edit."""

from __future__ import annotations

from PIL import Image


def _alpha(img: Image.Image) -> Image.Image | None:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").getchannel("A")
    return None


def openai_mask(mask: Image.Image) -> Image.Image:
    """To pictale's mask (white = repaint). With an alpha channel, OpenAI's rule: alpha 0 = edit. Without one
    (a grey or RGB mask, as A1111 clients draw them), white = edit."""
    alpha = _alpha(mask)
    if alpha is None:
        return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    return alpha.point(lambda a: 255 if a == 0 else 0)


def transparency_mask(image: Image.Image) -> Image.Image | None:
    """Without a mask, OpenAI edits where the image itself is fully transparent (if it is anywhere)."""
    alpha = _alpha(image)
    if alpha is None:
        return None
    area = alpha.point(lambda a: 255 if a == 0 else 0)
    return area if area.getbbox() is not None else None
