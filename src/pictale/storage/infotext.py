"""A1111's "parameters" infotext: build, parse, and carry it in PNG text chunks or JPEG/WEBP EXIF.

Byte-compatible with AUTOMATIC1111 1.10 (`processing.create_infotext`, `infotext_utils.quote/unquote/
parse_generation_parameters`, `images.save_image_with_geninfo/read_info_from_image`), so A1111's own PNG Info
reads pictale images and pictale reads A1111's. Pure: Pillow and the standard library only.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
from typing import Any

from PIL import Image, PngImagePlugin

from pictale.core.errors import InvalidImage
from pictale.core.images import NOT_AN_IMAGE

# Key order of A1111 1.10 `create_infotext`; a caller's extra keys go after these, then TRAILING_KEYS.
A1111_KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Distilled CFG Scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)
TRAILING_KEYS: tuple[str, ...] = ("Version", "User")

# A1111's `re_param`: `Key: value` where value is a JSON string or runs to the next comma.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")

# Image.info keys that are container details, not generation text (A1111's IGNORED_INFO_KEYS).
_IGNORED_INFO_KEYS = frozenset(
    {
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "dpi",
        "exif",
        "loop",
        "background",
        "timestamp",
        "duration",
        "progressive",
        "progression",
        "icc_profile",
        "chromaticity",
        "photoshop",
    }
)

# NovelAI writes k-diffusion names; A1111 maps them through its sampler names and aliases, else "Euler a".
_NOVELAI_SAMPLERS = {
    "k_euler_a": "Euler a",
    "k_euler_ancestral": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a",
    "k_dpmpp_2s_a": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpmpp_3m_sde": "DPM++ 3M SDE",
    "k_dpm_fast": "DPM fast",
    "k_dpm_ad": "DPM adaptive",
    "ddim": "DDIM",
    "plms": "PLMS",
    "unipc": "UniPC",
    "k_lcm": "LCM",
}

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UC_UNICODE = b"UNICODE\x00"
_UC_ASCII = b"ASCII\x00\x00\x00"
_UC_JIS = b"JIS\x00\x00\x00\x00\x00"
_UC_UNDEFINED = b"\x00" * 8
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})


# ---------------------------------------------------------------------------------------------- text


def quote(value: object) -> object:
    """A1111's `quote`: JSON-encode a value whose text has a comma, colon or newline; else leave it."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def unquote(text: str) -> str:
    """A1111's `unquote`: decode a JSON string literal; anything else comes back unchanged."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def ordered_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` in A1111's key order: known keys first, unknown keys as given, then Version and User."""
    rank = {k: i for i, k in enumerate(A1111_KEY_ORDER)}
    known = sorted((k for k in params if k in rank), key=rank.__getitem__)
    extra = [k for k in params if k not in rank and k not in TRAILING_KEYS]
    trailing = [k for k in TRAILING_KEYS if k in params]
    return {k: params[k] for k in (*known, *extra, *trailing)}


def build_infotext(prompt: str, negative_prompt: str, params: dict[str, object]) -> str:
    """The infotext A1111 writes: prompt, optional `Negative prompt:` line, `Key: value` line (dict order)."""
    # A key equal to its value is written bare, as A1111 does for flag-like extra params.
    pairs = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{pairs}".strip()


def parse_infotext(text: str) -> dict[str, object]:
    """A1111's `parse_generation_parameters`: Prompt, Negative prompt, each key, and A1111's defaults."""
    res: dict[str, object] = {}
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""

    prompt = negative = ""
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[16:].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"] = prompt
    res["Negative prompt"] = negative

    for key, value in _RE_PARAM.findall(last):
        if not value:
            continue  # A1111 fails on an empty value and skips the key
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = _RE_IMAGESIZE.match(value)
        if size is not None:
            res[f"{key}-1"] = size.group(1)
            res[f"{key}-2"] = size.group(2)
        else:
            res[key] = value

    _fill_defaults(res)
    return res


def _fill_defaults(res: dict[str, object]) -> None:
    """The values A1111 assumes for keys an infotext leaves out (a missing key means its default)."""
    res.setdefault("Clip skip", "1")
    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] = f"{res['Prompt']}<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    res.setdefault("Hires sampler", "Use same sampler")
    res.setdefault("Hires checkpoint", "Use same checkpoint")
    res.setdefault("Hires prompt", "")
    res.setdefault("Hires negative prompt", "")
    res.setdefault("Mask mode", "Inpaint masked")
    res.setdefault("Masked content", "original")
    res.setdefault("Inpaint area", "Whole picture")
    res.setdefault("Masked area padding", 32)
    _restore_old_hires_fix(res)
    res.setdefault("RNG", "GPU")
    res.setdefault("Schedule type", "Automatic")
    res.setdefault("Schedule max sigma", 0)
    res.setdefault("Schedule min sigma", 0)
    res.setdefault("Schedule rho", 0)
    res.setdefault("VAE Encoder", "Full")
    res.setdefault("VAE Decoder", "Full")
    res.setdefault("FP8 weight", "Disable")
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False


def _restore_old_hires_fix(res: dict[str, object]) -> None:
    """Pre-1.0 infotexts gave `First pass size`; A1111 turns it into Size plus `Hires resize`."""
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    try:
        fw, fh = int(str(first_w)), int(str(first_h))
        width, height = int(str(res.get("Size-1", 512))), int(str(res.get("Size-2", 512)))
    except ValueError:
        return
    if fw == 0 or fh == 0:
        scale = math.sqrt(512 * 512 / (width * height)) if width and height else 1.0
        fw, fh = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    res["Size-1"], res["Size-2"] = fw, fh
    res["Hires resize-1"], res["Hires resize-2"] = width, height


# --------------------------------------------------------------------------------------------- files


def encode_png(
    image: Image.Image, infotext: str | None, *, extra: dict[str, str] | None = None, compress_level: int = 6
) -> bytes:
    """PNG with the infotext in a `parameters` text chunk (iTXt when not Latin-1), plus `extra` chunks.

    `compress_level`: zlib 0 (none, fastest) to 9 (smallest); Pillow's default 6. The pixels are the same at every
    level; responses use `Settings.png_compress_level` (measured on a 1280x1504 page image: level 1 0.06 s and 16 %
    larger, level 6 0.17 s; the noise of random-weight models does not compress at any level)."""
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text("parameters", infotext)  # PIL switches to iTXt itself, as in A1111
    for key, value in (extra or {}).items():
        if key == "parameters" and infotext is not None:
            continue
        info.add_text(key, str(value))
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def encode_image(
    image: Image.Image,
    infotext: str | None,
    fmt: str = "png",
    *,
    quality: int = 80,
    lossless: bool = False,
    compress_level: int = 6,
) -> bytes:
    """Encode as "png", "jpeg" (or "jpg") or "webp"; JPEG/WEBP carry the infotext in EXIF UserComment."""
    kind = fmt.lower().lstrip(".")
    if kind == "png":
        return encode_png(image, infotext, compress_level=compress_level)
    if kind not in ("jpeg", "jpg", "webp"):
        raise ValueError(f"unsupported image format {fmt!r}; use png, jpeg or webp")
    webp = kind == "webp"
    if image.mode == "I;16":
        # A1111 scales 16-bit samples to 8 bits before saving a lossy format.
        image = image.point(lambda p: p * (255 / 65535)).convert("RGB" if webp else "L")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # A1111 drops alpha for JPEG and WEBP alike
    options: dict[str, Any] = {"quality": quality}
    if webp:
        options["lossless"] = lossless
    if infotext is not None:
        options["exif"] = _exif_with_user_comment(infotext)
    buf = io.BytesIO()
    image.save(buf, format="WEBP" if webp else "JPEG", **options)
    return buf.getvalue()


def _exif_with_user_comment(text: str) -> bytes:
    """EXIF holding only UserComment (Unicode), byte for byte what A1111's `piexif.dump` writes."""
    comment = _UC_UNICODE + text.encode("utf-16-be")
    # Big-endian TIFF header (8), IFD0 with the Exif-IFD pointer (2+12+4), then the Exif IFD with
    # UserComment as UNDEFINED (2+12; piexif writes no next-IFD offset there) and the comment itself.
    exif_ifd_at = 8 + 18
    value_at = exif_ifd_at + 14
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", _EXIF_IFD, 4, 1, exif_ifd_at) + struct.pack(">I", 0)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", _USER_COMMENT, 7, len(comment), value_at) + comment
    return b"Exif\x00\x00" + tiff


def read_infotext(data: bytes) -> tuple[str | None, dict[str, str]]:
    """(infotext, other text items) from PNG text chunks, EXIF UserComment, a GIF comment or NovelAI PNGs."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # also reads text chunks placed after the image data
    except Exception:  # Pillow raises many types (OSError, SyntaxError, ValueError, bombs)
        raise InvalidImage(f"image: {NOT_AN_IMAGE}", param="image") from None

    items: dict[str, Any] = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        comment = _read_user_comment(items["exif"])
        if comment:
            geninfo = comment
    elif "comment" in items:  # GIF
        raw = items["comment"]
        geninfo = raw.decode("utf8", errors="ignore") if isinstance(raw, bytes) else str(raw)
    for key in _IGNORED_INFO_KEYS:
        items.pop(key, None)

    if items.get("Software") == "NovelAI":
        geninfo = _novelai_infotext(items, image.width, image.height) or geninfo

    text_items = {str(k): str(v) for k, v in items.items() if isinstance(v, str)}
    return (str(geninfo) if geninfo is not None else None), text_items


def _read_user_comment(exif_bytes: object) -> str:
    """Decode EXIF UserComment like `piexif.helper.UserComment.load`, falling back to UTF-8 as A1111 does."""
    if not isinstance(exif_bytes, (bytes, bytearray)):
        return ""
    try:
        exif = Image.Exif()
        exif.load(bytes(exif_bytes))
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:
        return ""
    if isinstance(raw, tuple):  # some writers store it as BYTE instead of UNDEFINED
        raw = bytes(raw)
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return ""
    prefix, body = bytes(raw[:8]), bytes(raw[8:])
    if prefix == _UC_UNICODE:
        return _decode_utf16(body)
    if prefix == _UC_ASCII:
        return body.decode("ascii", errors="replace")
    if prefix == _UC_JIS:
        return body.decode("shift_jis", errors="replace")
    return bytes(raw).decode("utf8", errors="ignore").strip("\x00")


def _decode_utf16(body: bytes) -> str:
    """UTF-16 as piexif reads it (big-endian); tolerate little-endian writers, which A1111 would garble."""
    if body[:2] == b"\xff\xfe":
        return body[2:].decode("utf-16-le", errors="replace")
    if body[:2] == b"\xfe\xff":
        return body[2:].decode("utf-16-be", errors="replace")
    # ASCII-heavy text is zero in every high byte: the position of the zeros gives the byte order.
    if len(body) >= 2 and body[0] != 0 and body[1] == 0:
        return body.decode("utf-16-le", errors="replace")
    return body.decode("utf-16-be", errors="replace")


def _novelai_infotext(items: dict[str, Any], width: int, height: int) -> str | None:
    """NovelAI's Description/Comment pair rewritten as an A1111 infotext, as A1111's PNG Info does."""
    try:
        info = json.loads(items["Comment"])
        name = str(info["sampler"]).lower()
        names = {v.lower(): v for v in _NOVELAI_SAMPLERS.values()}
        sampler = _NOVELAI_SAMPLERS.get(name) or names.get(name, "Euler a")
        return (
            f"{items['Description']}\n"
            f"Negative prompt: {info['uc']}\n"
            f"Steps: {info['steps']}, Sampler: {sampler}, CFG scale: {info['scale']}, Seed: {info['seed']}, "
            f"Size: {width}x{height}, Clip skip: 2, ENSD: 31337"
        )
    except (KeyError, TypeError, ValueError):
        return None
