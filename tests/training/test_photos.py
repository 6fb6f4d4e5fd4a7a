"""Training photos before any compute: one 4xx listing every bad file, zips, EXIF, face crops, buckets, captions."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from pictale.core.errors import InvalidTrainingPhotos, InvalidUpload, UploadTooLarge
from pictale.training.photos import check_photos, files_from_zip, prepare
from pictale.training.photos.buckets import aspect_buckets, fit_to_bucket, nearest_bucket
from pictale.training.photos.captions import captioner_dir, clean_caption, framing, orientation, template_caption
from pictale.training.photos.faces import crop_box, face_box
from pictale.training.spec import TrainingSpec

skdata = pytest.importorskip("skimage.data", reason="scikit-image (a dev dependency) ships the test face")

ASTRONAUT_FACE = (177, 66, 95, 95)  # where the face in skimage's astronaut is (training.md §3.1)


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def noise(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A sharp picture with no face, different for every seed (blocks of random colours)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.NEAREST)


def jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def spec(kind: str = "face", resolution: int = 256, **kw) -> TrainingSpec:
    return TrainingSpec(
        name="sasha", trigger="sks", kind=kind, base_model="m", family="sd15", resolution=resolution, **kw
    )


def by_file(exc: InvalidTrainingPhotos) -> dict:
    found: dict = {}
    for p in exc.problems:
        found.setdefault(p["file"], []).append(p["problem"])
    return found


def test_every_problem_is_listed_with_its_file_in_one_error():
    face = astronaut()
    files = [
        ("good.jpg", jpeg(face)),
        ("broken.jpg", b"\xff\xd8\xff not really a jpeg"),
        ("empty.png", b""),
        ("small.jpg", jpeg(ImageOps.mirror(face).resize((200, 200)))),
        ("blurry.jpg", jpeg(ImageOps.mirror(face).filter(ImageFilter.GaussianBlur(3)))),
        ("again.png", png(face.resize((300, 300)))),
        ("noface.png", png(noise(1, (400, 300)))),
        ("orphan.txt", b"a caption for nothing"),
    ]
    with pytest.raises(InvalidTrainingPhotos) as caught:
        check_photos(files, kind="face", resolution=256)
    exc = caught.value
    assert isinstance(exc, InvalidUpload) and exc.status == 422 and exc.code == "invalid_training_photos"
    problems = by_file(exc)
    assert "good.jpg" not in problems
    assert problems["broken.jpg"] == ["not a decodable image (damaged, or not PNG, JPEG, WEBP, GIF or BMP)"]
    assert problems["empty.png"] == ["empty file"]
    assert "200x200" in problems["small.jpg"][0] and "at least 256 px" in problems["small.jpg"][0]
    assert any(p.startswith("very blurry") for p in problems["blurry.jpg"])
    assert problems["again.png"] == ["near-duplicate of good.jpg"]
    assert problems["noface.png"] == ["no face found (a frontal face, upright, is needed for this kind)"]
    assert problems["orphan.txt"] == ["a caption with no photo of the same name"]
    assert problems[None] == ["too few photos: 1 usable photo(s) of 7; the face preset needs at least 10"]
    for name in problems:  # the message names every file too, for clients that show only the message
        assert name is None or name in exc.message
    assert all(set(p) == {"file", "problem"} for p in exc.problems)


def test_too_few_photos_for_the_preset():
    files = [(f"{i}.png", png(noise(i))) for i in range(4)]
    with pytest.raises(InvalidTrainingPhotos) as caught:
        check_photos(files, kind="style", resolution=128)
    assert caught.value.problems == [
        {"file": None, "problem": "too few photos: 4 usable photo(s); the style preset needs at least 5"}
    ]
    assert len(check_photos(files, kind="object", resolution=128, min_images=4)) == 4


def test_unknown_kind_and_too_many_files_are_refused():
    with pytest.raises(InvalidTrainingPhotos, match="unknown kind"):
        check_photos([], kind="landscape", resolution=64)
    with pytest.raises(InvalidTrainingPhotos, match="more than the limit of 2"):
        check_photos([(f"{i}.png", b"") for i in range(3)], kind="style", resolution=64, max_images=2)


def test_zip_input_with_captions_and_junk(tmp_path: Path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/b.png", png(noise(2)))
        zf.writestr("set/a.jpg", jpeg(noise(1)))
        zf.writestr("set/a.txt", "  red car\non a  road ")
        zf.writestr("set/c.png", png(noise(3)))
        zf.writestr("set/c.txt", "sks toy in the snow")
        zf.writestr("__MACOSX/set/._a.jpg", b"resource fork")
        zf.writestr("set/.DS_Store", b"finder")
        zf.writestr("set/Thumbs.db", b"windows")
        zf.writestr("set/sub/", b"")
    files = files_from_zip(buf.getvalue())
    assert [name for name, _ in files] == ["set/a.jpg", "set/a.txt", "set/b.png", "set/c.png", "set/c.txt"]
    photos = prepare(files, spec("object", 128, class_word="toy"), tmp_path, min_images=3)
    assert [(p.source, p.caption, p.caption_from) for p in photos] == [
        ("set/a.jpg", "sks, red car on a road", "file"),
        ("set/b.png", "sks toy, landscape format", "template"),
        ("set/c.png", "sks toy in the snow", "file"),
    ]
    assert Path(photos[0].path).with_suffix(".txt").read_text() == "sks, red car on a road"


def test_zip_bombs_and_broken_zips_are_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * (4 * 1024 * 1024))
    assert len(buf.getvalue()) < 64 * 1024
    with pytest.raises(UploadTooLarge, match="once uncompressed"):
        files_from_zip(buf.getvalue(), max_bytes=1024 * 1024)
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(6):
            zf.writestr(f"{i}.png", b"x")
    with pytest.raises(UploadTooLarge, match="6 files, more than the limit of 5"):
        files_from_zip(many.getvalue(), max_files=5)
    with pytest.raises(InvalidTrainingPhotos) as caught:
        files_from_zip(b"PK not a zip", name="mine.zip")
    assert caught.value.problems == [{"file": "mine.zip", "problem": "not a readable zip archive"}]


def test_exif_rotated_photo_comes_out_upright(tmp_path: Path):
    upright = astronaut().crop((0, 0, 512, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter to the left; viewers turn it right
    sideways = jpeg(upright.rotate(90, expand=True), exif=exif)
    assert face_box(Image.open(io.BytesIO(sideways)).convert("RGB")) is None  # Haar misses the sideways face
    (checked,) = check_photos([("turned.jpg", sideways)], kind="face", resolution=256, min_images=1)
    assert (checked.width, checked.height) == (512, 300)
    assert checked.face is not None and abs(checked.face[0] - ASTRONAUT_FACE[0]) < 12

    (turned,) = prepare([("turned.jpg", sideways)], spec("object"), tmp_path / "a", min_images=1)
    (plain,) = prepare([("plain.jpg", jpeg(upright))], spec("object"), tmp_path / "b", min_images=1)
    assert (turned.width, turned.height) == (plain.width, plain.height) == (320, 192)
    a = np.asarray(Image.open(turned.path), dtype=np.float64)
    b = np.asarray(Image.open(plain.path), dtype=np.float64)
    assert np.abs(a - b).mean() < 4  # the same picture, up to JPEG noise


def test_face_found_and_cropped_on_a_real_face(tmp_path: Path):
    box = face_box(astronaut())
    assert box is not None
    assert all(abs(got - want) <= 6 for got, want in zip(box, ASTRONAUT_FACE, strict=True))
    assert face_box(noise(7, (512, 512))) is None  # a synthetic picture with no face

    left, top, right, bottom = crop_box("face", box, (512, 512), 200)
    assert right - left == bottom - top >= 200  # square, head and shoulders
    assert left <= box[0] and top <= box[1] and right >= box[0] + box[2] and bottom >= box[1] + box[3]
    _, c_top, _, c_bottom = crop_box("character", box, (512, 512), 200)
    assert c_bottom - c_top > bottom - top  # more of the body
    assert crop_box("style", box, (512, 512), 200) == (0, 0, 512, 512)
    assert crop_box("character", None, (512, 300), 200) == (0, 0, 512, 300)

    big = astronaut().resize((1024, 1024), Image.Resampling.LANCZOS)
    photos = [("astronaut.png", png(big)), ("mirrored.png", png(ImageOps.mirror(big)))]
    prepared = prepare(photos, spec("face", 256), tmp_path, min_images=2)
    assert [(p.width, p.height, p.caption) for p in prepared] == [(256, 256, "sks person, portrait")] * 2
    out = Image.open(prepared[0].path)
    again = face_box(out)  # the face is in the crop, near its middle, large
    assert again is not None
    assert 0.25 < again[2] / out.width < 0.6 and abs(again[0] + again[2] / 2 - out.width / 2) < out.width * 0.15


def test_character_keeps_a_picture_without_a_face(tmp_path: Path):
    files = [("drawn.png", png(noise(3, (300, 400))))]
    (photo,) = prepare(files, spec("character", 128, class_word="girl"), tmp_path, min_images=1)
    assert (photo.width, photo.height) == (112, 144)
    assert photo.caption == "sks girl, vertical format"


def test_aspect_buckets():
    buckets = aspect_buckets(512)
    assert buckets == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]
    big = aspect_buckets(1024)
    assert (1024, 1024) in big and all(w % 64 == 0 and h % 64 == 0 and w * h <= 1024 * 1024 for w, h in big)
    assert all((h, w) in big and max(w / h, h / w) <= 2 for w, h in big)
    assert aspect_buckets(64) == [(48, 80), (56, 72), (64, 64), (72, 56), (80, 48)]  # tiny models: steps of 8
    assert nearest_bucket(4032, 3024, buckets) == (576, 448)
    assert nearest_bucket(3000, 4000, aspect_buckets(1024)) == (896, 1152)
    assert nearest_bucket(100, 100, buckets) == (512, 512)
    assert fit_to_bucket(noise(1, (400, 300)), (576, 448)).size == (576, 448)


def test_captions():
    assert clean_caption("  a man\n in a hat ", "sks") == "sks, a man in a hat"
    assert clean_caption("photo of sks person smiling", "sks") == "photo of sks person smiling"
    assert clean_caption("sks_person at the beach", "sks") == "sks, sks_person at the beach"  # a word, not a prefix
    assert clean_caption("", "sks") == "sks"
    assert [framing(h, 100) for h in (50, 30, 15, 5)] == ["close-up", "portrait", "half body", "full body"]
    assert orientation(100, 100) == "square format" and orientation(200, 100) == "landscape format"
    common = {"trigger": "sks", "class_word": "person", "size": (256, 256), "brightness": 120.0}
    assert template_caption(kind="face", face_height=100, **common) == "sks person, portrait"
    assert template_caption(kind="face", face_height=20, **{**common, "brightness": 30.0}) == (
        "sks person, full body, low light"
    )
    assert (
        template_caption(kind="style", face_height=None, **{**common, "class_word": ""}) == "sks style, square format"
    )


def test_captioner_folder_is_found_only_with_a_config(tmp_path: Path):
    assert captioner_dir(None) is None and captioner_dir(tmp_path) is None
    (tmp_path / "captioner").mkdir()
    assert captioner_dir(tmp_path) is None
    (tmp_path / "captioner" / "config.json").write_text("{}")
    assert captioner_dir(tmp_path) == tmp_path / "captioner"


def test_prepare_is_deterministic_and_replaces_an_old_set(tmp_path: Path):
    files = [(f"{i}.png", png(noise(i, (400 + 40 * i, 300)))) for i in range(6)]
    first = prepare(files, spec("style", 128), tmp_path / "a")
    second = prepare(files, spec("style", 128), tmp_path / "b")
    assert [p.caption for p in first] == [p.caption for p in second]
    for a, b in zip(first, second, strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
        assert Path(a.path).name == Path(b.path).name
    prepare(files[:5], spec("style", 128), tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "photos").iterdir()) == [
        f"{i:04d}.{ext}" for i in range(1, 6) for ext in ("png", "txt")
    ]


def test_nothing_is_written_when_the_check_fails(tmp_path: Path):
    with pytest.raises(InvalidTrainingPhotos):
        prepare([("a.png", b"nope")], spec("style", 128), tmp_path / "work", min_images=1)
    assert not (tmp_path / "work").exists()


def test_photos_package_imports_no_torch():
    code = "import sys, pictale.training.photos; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
