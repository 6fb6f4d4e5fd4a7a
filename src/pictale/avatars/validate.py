"""Checks on what a user sends before anything is stored: names, tokens, images, pose skeletons, file names."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pictale.core.errors import InvalidRequest, InvalidUpload, UploadTooLarge
from pictale.core.types import AvatarKind

NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.<>-]{1,64}$")
IMAGE_KINDS = frozenset({AvatarKind.FACE, AvatarKind.STYLE, AvatarKind.POSE})
FILE_KINDS = frozenset({AvatarKind.LORA, AvatarKind.EMBEDDING})
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP"}
MAX_IMAGE_MB = 50
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_TRIGGER_WORDS = 32


def parse_kind(kind: str | AvatarKind) -> AvatarKind:
    try:
        return AvatarKind(str(kind).strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in AvatarKind)
        raise InvalidRequest(f"unknown avatar kind {kind!r}: use one of {kinds}", param="kind") from None


def suggest_name(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", name.strip().lower())).strip("_")[:32] or "my_avatar"


def check_name(name: str, param: str = "name") -> str:
    """Avatar names are one word: 1-32 characters from a-z, 0-9 and _ (unique per owner and kind)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidRequest(
            f"avatar name {name!r} is not allowed: use one word of 1-32 characters from a-z, 0-9 and _ "
            f"(for example {suggest_name(str(name))!r})",
            param=param,
        )
    return name


def check_token(token: str) -> str:
    token = token.strip()
    if not TOKEN_RE.match(token):
        raise InvalidRequest(
            f"embedding token {token!r} is not allowed: use 1-64 characters from letters, digits and _ . < > -",
            param="token",
        )
    return token


def parse_trigger_words(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Comma-separated text (or a list) -> trimmed, de-duplicated words in order."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [w for v in value for w in str(v).split(",")]
    words = tuple(dict.fromkeys(w.strip() for w in items if w.strip()))
    if len(words) > MAX_TRIGGER_WORDS or any(len(w) > 100 for w in words):
        raise InvalidRequest(
            f"at most {MAX_TRIGGER_WORDS} trigger words of up to 100 characters each", param="trigger_words"
        )
    return words


def clean_filename(filename: str | None, index: int) -> str:
    """The client's file name without any path, for messages and listings."""
    name = Path((filename or "").replace("\\", "/")).name.strip()
    return name[:200] or f"file {index + 1}"


def check_tensor_filename(filename: str, kind: AvatarKind) -> None:
    """LoRA and embedding uploads are .safetensors; pickles are refused by name, before a byte is read."""
    lower = filename.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise InvalidUpload(
            f"{filename}: only .safetensors files are accepted; .ckpt/.pt/.pth/.bin files are Python pickles "
            "that can run code when loaded, and pictale never opens them (convert it to .safetensors)",
            param="files",
        )
    if not lower.endswith(".safetensors"):
        raise InvalidUpload(f"{filename}: a {kind.value} avatar must be a .safetensors file", param="files")


def check_image(path: Path, filename: str, max_pixels: int) -> tuple[int, int]:
    """A real, complete image within the pixel limit; returns its size. Decoding is bounded by the limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, (w, h) = im.format, im.size
                if fmt not in IMAGE_FORMATS:
                    raise InvalidUpload(
                        f"{filename}: {fmt} images are not accepted; use PNG, JPEG, WebP or BMP", param="files"
                    )
                if w * h > max_pixels:
                    raise _too_many_pixels(filename, w, h, max_pixels)
                im.verify()
            with Image.open(path) as im:
                im.load()  # verify() skips pixel data; load() finds truncated or corrupt streams
    except Image.DecompressionBombError:
        raise UploadTooLarge(
            f"{filename}: the image has more than the limit of {max_pixels} pixels (max_image_pixels)", param="files"
        ) from None
    except UnidentifiedImageError:
        raise InvalidUpload(f"{filename}: not an image (expected PNG, JPEG, WebP or BMP)", param="files") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidUpload(f"{filename}: damaged or truncated image ({exc})", param="files") from None
    return w, h


def _too_many_pixels(filename: str, w: int, h: int, limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"{filename}: {w}x{h} is {w * h} pixels, more than the limit of {limit} pixels (max_image_pixels)",
        param="files",
    )


def looks_like_skeleton(image: Image.Image) -> bool:
    """An OpenPose render: mostly near-black background with a few saturated coloured limbs."""
    small = image.convert("RGB")
    small.thumbnail((128, 128))
    hsv = np.asarray(small.convert("HSV"), dtype=np.int32)
    sat, val = hsv[..., 1], hsv[..., 2]
    dark = val < 40
    lit = ~dark
    total, n_lit = dark.size, int(lit.sum())
    if dark.sum() < 0.6 * total or n_lit < 0.003 * total:
        return False
    saturated = lit & (sat > 100)
    return int(saturated.sum()) >= 0.5 * n_lit
