"""A1111's img2img and inpaint preparation of init images and masks (Pillow only)."""

from __future__ import annotations

from pictale.core.errors import InvalidRequest
from pictale.core.images import blur_mask, fill_masked, mask_from_image, masked_region, resize_image, to_rgb
from pictale.core.types import GenerationSpec, Mode


def prepare_images(spec: GenerationSpec, seeds: list[int]):
    """A1111 img2img preparation: resize mode, mask (alpha, blur, invert), masked content, crop."""
    if spec.mode is Mode.TXT2IMG:
        return None, None, None
    n = spec.total_images
    if len(spec.init_images) > spec.batch_size:
        raise InvalidRequest(
            f"{len(spec.init_images)} init images but batch_size is {spec.batch_size}",
            param="init_images",
        )
    sources = [to_rgb(img) for img in spec.init_images]
    sources = [sources[i % len(sources)] for i in range(n)]
    if spec.mode is Mode.IMG2IMG:
        return (
            [resize_image(spec.resize_mode, img, spec.width, spec.height) for img in sources],
            None,
            None,
        )
    mask = mask_from_image(spec.mask, invert=spec.inpainting_mask_invert)
    first = resize_image(spec.resize_mode, sources[0], spec.width, spec.height)
    mask = resize_image(spec.resize_mode, mask, spec.width, spec.height).point(lambda v: 255 if v >= 128 else 0)
    soft = blur_mask(mask, spec.mask_blur)
    crop = masked_region(mask, spec.width, spec.height, spec.inpaint_full_res_padding)
    images, masks, originals = [], [], []
    for i, src in enumerate(sources):
        original = first if i == 0 else resize_image(spec.resize_mode, src, spec.width, spec.height)
        originals.append(original)
        img = fill_masked(original, mask, spec.inpainting_fill, seeds[i])
        if spec.inpaint_full_res and crop is not None:
            images.append(img.crop(crop).resize((spec.width, spec.height)))
            masks.append(soft.crop(crop).resize((spec.width, spec.height)))
        else:
            images.append(img)
            masks.append(soft)
    # each output is pasted back over its own source image
    overlay = (originals, soft, crop if spec.inpaint_full_res else None)
    return images, masks, overlay
