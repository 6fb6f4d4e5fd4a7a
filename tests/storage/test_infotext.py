"""A1111 infotext: exact text, parsing, and PNG / JPEG / WEBP metadata round trips."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image

from pictale.core.errors import InvalidImage
from pictale.storage.infotext import (
    A1111_KEY_ORDER,
    build_infotext,
    encode_image,
    encode_png,
    ordered_params,
    parse_infotext,
    quote,
    read_infotext,
)

EXAMPLE = (
    "a cat\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)
EXAMPLE_PARAMS: dict[str, object] = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7,
    "Seed": 1234567890,
    "Size": "512x512",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Version": "v1.10.1",
}


def _image(mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (16, 8), (10, 20, 30) if mode == "RGB" else None)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


# ------------------------------------------------------------------------------------------- build


def test_a1111_example_exact():
    assert build_infotext("a cat", "blurry", EXAMPLE_PARAMS) == EXAMPLE


def test_float_prints_like_python_and_none_is_omitted():
    text = build_infotext("p", "", {"Steps": 20, "CFG scale": 7.0, "Seed": None, "Denoising strength": 0.75})
    assert text == "p\nSteps: 20, CFG scale: 7.0, Denoising strength: 0.75"


def test_empty_negative_prompt_has_no_line():
    assert "Negative prompt" not in build_infotext("a dog", "", {"Steps": 1})


def test_quoting_of_comma_colon_newline():
    params = {
        "Lora hashes": "toy: abc123, cat: def456",
        "Note": 'say "hi"\nbye',
        "Plain": "no specials",
        "Tiling": True,
    }
    line = build_infotext("x", "", params).split("\n")[-1]
    assert line == (
        'Lora hashes: "toy: abc123, cat: def456", Note: "say \\"hi\\"\\nbye", Plain: no specials, Tiling: True'
    )
    assert quote("日本: 語") == '"日本: 語"'  # ensure_ascii=False, as A1111


def test_key_equal_to_value_is_written_bare():
    assert build_infotext("x", "", {"Steps": 2, "flag": "flag"}).endswith("Steps: 2, flag")


def test_dict_value_is_json():
    line = build_infotext("x", "", {"Hashes": {"vae": "abc"}}).split("\n")[-1]
    assert line == 'Hashes: {"vae": "abc"}'


def test_ordered_params():
    d = {
        "Version": "v",
        "Lora hashes": "h",
        "Seed": 1,
        "User": "u",
        "Steps": 2,
        "Emphasis": "e",
        "Size": "1x1",
    }
    assert list(ordered_params(d)) == ["Steps", "Seed", "Size", "Lora hashes", "Emphasis", "Version", "User"]
    assert A1111_KEY_ORDER[:4] == ("Steps", "Sampler", "Schedule type", "CFG scale")
    assert A1111_KEY_ORDER[-1] == "Tiling"


# ------------------------------------------------------------------------------------------- parse


def test_parse_example():
    p = parse_infotext(EXAMPLE)
    assert p["Prompt"] == "a cat"
    assert p["Negative prompt"] == "blurry"
    assert p["Steps"] == "20"
    assert p["Sampler"] == "DPM++ 2M"
    assert p["Schedule type"] == "Karras"
    assert p["CFG scale"] == "7"
    assert (p["Size-1"], p["Size-2"]) == ("512", "512")
    assert "Size" not in p
    assert p["Model hash"] == "6ce0161689"
    assert p["Version"] == "v1.10.1"


def test_parse_fills_a1111_defaults():
    p = parse_infotext("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7")
    assert p["Clip skip"] == "1"
    assert p["Schedule type"] == "Automatic"
    assert p["RNG"] == "GPU"
    assert p["Hires resize-1"] == 0 and p["Hires resize-2"] == 0
    assert p["Hires sampler"] == "Use same sampler"
    assert p["Hires checkpoint"] == "Use same checkpoint"
    assert p["Mask mode"] == "Inpaint masked"
    assert p["Masked content"] == "original"
    assert p["Inpaint area"] == "Whole picture"
    assert p["Masked area padding"] == 32
    assert p["VAE Encoder"] == "Full" and p["VAE Decoder"] == "Full"
    assert p["FP8 weight"] == "Disable"
    assert "Cache FP16 weight for LoRA" not in p


def test_last_line_needs_three_pairs():
    p = parse_infotext("a cat\nStyle: ink, Mood: calm")
    assert p["Prompt"] == "a cat\nStyle: ink, Mood: calm"
    assert "Style" not in p


def test_round_trip_with_quotes_and_multiline_prompt():
    prompt = "a cat,\nsitting on a mat\n(masterpiece:1.2)"
    negative = "blurry,\nlow quality"
    params = {
        "Steps": 20,
        "Sampler": "Euler a",
        "CFG scale": 7.5,
        "Seed": 42,
        "Size": "640x384",
        "Lora hashes": "toy: abc123, cat: def456",
        "Note": 'say "hi"',
        "Version": "pictale-0.1.0",
    }
    text = build_infotext(prompt, negative, params)
    p = parse_infotext(text)
    assert p["Prompt"] == prompt
    assert p["Negative prompt"] == negative
    assert p["Steps"] == "20" and p["CFG scale"] == "7.5" and p["Seed"] == "42"
    assert (p["Size-1"], p["Size-2"]) == ("640", "384")
    assert p["Lora hashes"] == "toy: abc123, cat: def456"
    assert p["Note"] == 'say "hi"'
    assert p["Version"] == "pictale-0.1.0"


def test_parse_old_first_pass_size():
    p = parse_infotext("x\nSteps: 20, Size: 1024x1024, First pass size: 0x0, Seed: 1")
    assert (p["Size-1"], p["Size-2"]) == (512, 512)
    assert (p["Hires resize-1"], p["Hires resize-2"]) == (1024, 1024)


# ------------------------------------------------------------------------------------------- files


def test_png_text_chunk_written_and_read_back():
    data = encode_png(_image(), EXAMPLE, extra={"Software": "pictale"})
    assert b"tEXtparameters\x00" + EXAMPLE.encode("latin-1") in data
    chunks = _png_chunks(data)
    kinds = [k for k, _ in chunks]
    assert kinds.index(b"tEXt") < kinds.index(b"IDAT")  # before the image data, like A1111
    info, items = read_infotext(data)
    assert info == EXAMPLE
    assert items == {"Software": "pictale"}
    assert parse_infotext(info)["Seed"] == "1234567890"


def test_non_latin1_prompt_uses_itxt():
    text = build_infotext("猫が座っている — ☃", "", EXAMPLE_PARAMS)
    data = encode_png(_image(), text)
    chunks = dict(_png_chunks(data))
    assert b"iTXt" in chunks and b"tEXt" not in chunks
    assert chunks[b"iTXt"].startswith(b"parameters\x00")
    info, _ = read_infotext(data)
    assert info == text


def test_png_without_infotext():
    data = encode_image(_image("RGBA"), None, "png")
    assert read_infotext(data) == (None, {})
    assert Image.open(io.BytesIO(data)).mode == "RGBA"


def _user_comment(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif.load(im.info["exif"])
    return exif.get_ifd(0x8769)[0x9286]


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "webp"])
def test_jpeg_webp_exif_user_comment_round_trip(fmt):
    text = build_infotext("ein Hund, 犬", "blurry", EXAMPLE_PARAMS)
    data = encode_image(_image("RGBA"), text, fmt)
    im = Image.open(io.BytesIO(data))
    assert im.format == ("WEBP" if fmt == "webp" else "JPEG")
    assert im.mode == "RGB"
    # piexif's UserComment.dump(..., encoding="unicode"), stored as UNDEFINED (type 7) in the Exif IFD.
    assert _user_comment(data) == b"UNICODE\x00" + text.encode("utf-16-be")
    info, items = read_infotext(data)
    assert info == text
    assert "exif" not in items


def test_exif_bytes_match_piexif_dump():
    data = encode_image(_image(), "hi", "jpeg")
    start = data.index(b"Exif\x00\x00")
    tiff = data[start + 6 :]
    assert tiff[:8] == b"MM\x00\x2a\x00\x00\x00\x08"
    # IFD0 has one entry: the Exif IFD pointer (LONG); the Exif IFD has UserComment as UNDEFINED.
    assert struct.unpack(">HHHII", tiff[8:22]) == (1, 0x8769, 4, 1, 26)
    assert struct.unpack(">HHHII", tiff[26:40]) == (1, 0x9286, 7, 8 + 4, 40)
    assert tiff[40:52] == b"UNICODE\x00\x00h\x00i"


def test_jpeg_without_infotext_has_no_exif():
    data = encode_image(_image(), None, "jpeg")
    assert read_infotext(data) == (None, {})


def test_little_endian_utf16_user_comment_is_tolerated():
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + "a cat".encode("utf-16-le")
    buf = io.BytesIO()
    _image().save(buf, format="JPEG", exif=exif)
    assert read_infotext(buf.getvalue())[0] == "a cat"


def test_novelai_png_is_translated():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Description", "1girl, smile")
    comment = {"uc": "lowres", "steps": 28, "sampler": "k_euler_ancestral", "scale": 11, "seed": 7}
    info.add_text("Comment", json.dumps(comment))
    buf = io.BytesIO()
    _image().save(buf, format="PNG", pnginfo=info)
    text, items = read_infotext(buf.getvalue())
    assert text == (
        "1girl, smile\nNegative prompt: lowres\n"
        "Steps: 28, Sampler: Euler a, CFG scale: 11, Seed: 7, Size: 16x8, Clip skip: 2, ENSD: 31337"
    )
    assert items["Software"] == "NovelAI"


def test_unsupported_format():
    with pytest.raises(ValueError):
        encode_image(_image(), "x", "gif")


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_garbage_bytes_raise_invalid_image(data):
    with pytest.raises(InvalidImage):
        read_infotext(data)


def test_truncated_png_raises_invalid_image():
    data = encode_png(Image.effect_noise((64, 64), 50).convert("RGB"), "x")
    with pytest.raises(InvalidImage):
        read_infotext(data[: len(data) // 2])
