"""Names, trigger words, images and the skeleton heuristic."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pictale.avatars import validate
from pictale.core.errors import InvalidRequest, InvalidUpload, UploadTooLarge
from tests.avatars import files


@pytest.mark.parametrize("name", ["lucy", "a", "x" * 32, "cartoon_1", "0_0"])
def test_good_names(name):
    assert validate.check_name(name) == name


@pytest.mark.parametrize(
    ("name", "suggestion"), [("Lucy Smith", "lucy_smith"), ("x" * 33, "x" * 32), ("", "my_avatar"), ("é!", "my_avatar")]
)
def test_bad_names_suggest_one(name, suggestion):
    with pytest.raises(InvalidRequest) as err:
        validate.check_name(name)
    assert err.value.message == (
        f"avatar name {name!r} is not allowed: use one word of 1-32 characters from a-z, 0-9 and _ "
        f"(for example {suggestion!r})"
    )


def test_trigger_words():
    assert validate.parse_trigger_words(" toy_face, blue jacket ,, toy_face") == ("toy_face", "blue jacket")
    assert validate.parse_trigger_words(["a,b", "c"]) == ("a", "b", "c")
    with pytest.raises(InvalidRequest):
        validate.parse_trigger_words(",".join(f"w{i}" for i in range(40)))


def test_skeleton_heuristic():
    assert validate.looks_like_skeleton(Image.open(io.BytesIO(files.skeleton())))
    assert not validate.looks_like_skeleton(Image.open(io.BytesIO(files.png())))
    assert not validate.looks_like_skeleton(Image.new("RGB", (64, 64)))  # all black: nobody there
    grey_lines = Image.new("RGB", (64, 64))
    grey_lines.paste((128, 128, 128), (10, 10, 14, 60))
    assert not validate.looks_like_skeleton(grey_lines)


def test_images(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(files.png((40, 30), fmt="JPEG"))
    assert validate.check_image(path, "a.jpg", 10_000) == (40, 30)
    with pytest.raises(UploadTooLarge, match=r"^a.jpg: 40x30 is 1200 pixels, more than the limit of 1000 pixels"):
        validate.check_image(path, "a.jpg", 1000)
    path.write_bytes(files.png()[:-40])
    with pytest.raises(InvalidUpload, match=r"^a\.jpg: damaged or truncated image"):
        validate.check_image(path, "a.jpg", 10_000)
    path.write_bytes(b"GIF89a" + b"\0" * 30)
    with pytest.raises(InvalidUpload, match=r"^a\.jpg: "):
        validate.check_image(path, "a.jpg", 10_000)
