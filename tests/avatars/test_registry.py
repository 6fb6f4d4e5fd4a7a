"""The registry on its own: per-kind create/resolve, owners, rename, delete, gc, and nothing stored on failure."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from pictale.avatars.registry import AvatarRegistry, internal_token
from pictale.core.errors import AvatarExists, AvatarNotFound, InvalidRequest, InvalidUpload, UploadTooLarge
from pictale.core.types import AvatarKind
from tests.avatars import files
from tests.avatars.conftest import blob_files


def up(name: str, data: bytes):
    return (name, io.BytesIO(data))


def test_face_with_several_images_resolves_to_blobs_in_order(registry):
    a, b = files.png(seed=1), files.png(seed=2)
    info = registry.create("k1", "face", "lucy", [up("a.png", a), up("b.png", b)])
    assert (info.kind, info.name, info.size, info.filenames) == (
        AvatarKind.FACE,
        "lucy",
        len(a) + len(b),
        ("a.png", "b.png"),
    )
    ref = registry.resolve("k1", "face", "lucy", 0.4)
    assert ref.weight == 0.4 and ref.token is None
    assert [p.read_bytes() for p in ref.files] == [a, b]
    digests = [hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()]
    assert [p.relative_to(registry.blobs.root).as_posix() for p in ref.files] == [f"{d[:2]}/{d[2:]}" for d in digests]
    assert ref.digest == hashlib.sha256("".join(digests).encode()).hexdigest()
    assert registry.resolve("k1", "face", "LUCY", 1.0).name == "lucy"  # prompt tokens are case-insensitive
    assert registry.resolve("k2", "face", "lucy", 1.0) is None
    assert registry.resolve("k1", "style", "lucy", 1.0) is None


def test_lora_and_embedding_records(registry, sd15):
    lora = registry.create(
        "k1", "lora", "toy", [up("toy.safetensors", files.lora_kohya(sd15))], trigger_words="toy_face, blue"
    )
    assert (lora.family, lora.cross_attention_dim, lora.trigger_words) == ("sd15", 32, ("toy_face", "blue"))
    ref = registry.resolve("k1", AvatarKind.LORA, "toy", 0.9)
    assert (ref.family, ref.trigger_words, ref.token) == ("sd15", ("toy_face", "blue"), None)
    emb = registry.create("k1", "embedding", "ti", [up("ti.safetensors", files.embedding(sd15))])
    assert emb.token == "ti"  # the user's token defaults to the name
    ref = registry.resolve("k1", "embedding", "ti", 1.0)
    assert ref.token == internal_token(ref.digest) and ref.token.startswith("<be-emb-")
    registry.create("k1", "embedding", "ti2", [up("e.safetensors", files.embedding(sd15, 3))], token="<my-ti>")
    assert registry.tokens("k1") == {"ti": "ti", "<my-ti>": "ti2"}
    with pytest.raises(AvatarExists, match="you already have an embedding with the token 'ti'"):
        registry.create("k1", "embedding", "other", [up("e.safetensors", files.embedding(sd15, 4))], token="ti")


def test_pose_skeleton_and_photo(registry, tmp_path):
    registry.create("k1", "pose", "run", [up("run.png", files.skeleton())])
    with pytest.raises(InvalidUpload) as err:
        registry.create("k1", "pose", "walk", [up("walk.jpg", files.png(fmt="JPEG"))])
    assert err.value.message == (
        "walk.jpg: a pose avatar needs an OpenPose skeleton image (coloured limbs on a black background), and this "
        "looks like a photo. To turn photos into skeletons, install OpenPose detector weights in "
        f"{tmp_path / 'models' / 'Annotators'}"
    )
    seen = []

    def detector(photo: Image.Image) -> Image.Image:
        seen.append(photo.size)
        return Image.open(io.BytesIO(files.skeleton()))

    registry.pose_detector = detector
    info = registry.create("k1", "pose", "walk", [up("walk.jpg", files.png(fmt="JPEG"))])
    assert seen == [(64, 48)] and info.filenames == ("walk-pose.png",)
    assert registry.resolve("k1", "pose", "walk", 1).files[0].read_bytes() == files.skeleton()


def test_names_are_per_owner_and_kind(registry):
    registry.create("k1", "face", "lucy", [up("a.png", files.png())])
    registry.create("k1", "style", "lucy", [up("a.png", files.png())])
    registry.create("k2", "face", "lucy", [up("a.png", files.png())])
    with pytest.raises(AvatarExists, match=r"^you already have a face avatar named 'lucy'$"):
        registry.create("k1", "face", "lucy", [up("b.png", files.png(seed=5))])
    registry.create("k1", "face", "bob", [up("a.png", files.png())])
    assert registry.names("k1", "face") == ["bob", "lucy"]
    assert [(a.kind.value, a.name) for a in registry.list("k1")] == [
        ("face", "bob"),
        ("face", "lucy"),
        ("style", "lucy"),
    ]
    assert [a.name for a in registry.list("k2")] == ["lucy"]
    assert registry.list("k3") == []


def test_update_and_rename(registry, sd15):
    registry.create("k1", "lora", "toy", [up("toy.safetensors", files.lora_peft(sd15))])
    registry.create("k1", "lora", "car", [up("car.safetensors", files.lora_kohya(sd15))])
    info = registry.update("k1", "lora", "toy", trigger_words=["a", "b"], new_name="toy2")
    assert (info.name, info.trigger_words) == ("toy2", ("a", "b"))
    assert registry.resolve("k1", "lora", "toy", 1) is None
    with pytest.raises(AvatarExists, match="named 'car'"):
        registry.update("k1", "lora", "toy2", new_name="car")
    with pytest.raises(InvalidRequest, match="not allowed"):
        registry.update("k1", "lora", "toy2", new_name="Car Two")
    with pytest.raises(InvalidRequest, match="token only applies to embedding avatars"):
        registry.update("k1", "lora", "toy2", token="x")
    with pytest.raises(AvatarNotFound, match=r"^no lora avatar named 'toy2'$"):
        registry.update("k2", "lora", "toy2", new_name="mine")


def test_delete_removes_blobs_unless_shared(registry):
    data = files.png(seed=9)
    registry.create("k1", "face", "a", [up("a.png", data)])
    registry.create("k2", "face", "b", [up("b.png", data)])  # same content: one blob
    assert len(blob_files(registry)) == 1
    registry.delete("k1", "face", "a")
    assert len(blob_files(registry)) == 1
    assert registry.resolve("k2", "face", "b", 1).files[0].read_bytes() == data
    registry.delete("k2", "face", "b")
    assert blob_files(registry) == []
    with pytest.raises(AvatarNotFound):
        registry.delete("k2", "face", "b")


def test_thumbnail(registry, sd15):
    registry.create("k1", "style", "big", [up("big.png", files.png((600, 300)))])
    thumb = Image.open(io.BytesIO(registry.thumbnail("k1", "style", "big")))
    assert (thumb.format, thumb.size) == ("PNG", (256, 128))
    registry.create("k1", "lora", "toy", [up("toy.safetensors", files.lora_peft(sd15))])
    with pytest.raises(AvatarNotFound, match="lora avatars have no thumbnail"):
        registry.thumbnail("k1", "lora", "toy")


@pytest.mark.parametrize(
    ("kind", "uploads", "error", "message"),
    [
        ("face", [("x.png", b"not an image at all")], InvalidUpload, "x.png: not an image"),
        ("face", [("a.png", files.png()), ("b.png", b"junk")], InvalidUpload, "b.png: not an image"),
        ("style", [(f"{i}.png", files.png()) for i in range(4)], InvalidUpload, "too many images: 4 files"),
        ("face", [("big.png", files.png((80, 80)))], UploadTooLarge, "big.png: 80x80 is 6400 pixels"),
        ("lora", [("toy.ckpt", b"\x80\x02pickle")], InvalidUpload, "toy.ckpt: only .safetensors files are accepted"),
        ("lora", [("t.safetensors", files.random_tensors())], InvalidUpload, "t.safetensors: not a LoRA"),
        ("embedding", [("t.safetensors", b"\x00" * 10)], InvalidUpload, "t.safetensors: not a valid .safetensors"),
        ("lora", [("big.safetensors", b"\x00" * (1024 * 1024 + 1))], UploadTooLarge, "big.safetensors: larger than"),
        ("face", [], InvalidUpload, "no files uploaded"),
        ("lora", [("a.safetensors", b""), ("b.safetensors", b"")], InvalidUpload, "exactly one file, got 2"),
    ],
)
def test_failures_store_nothing(tmp_path, kind, uploads, error, message):
    from tests.avatars.conftest import open_registry

    registry: AvatarRegistry = open_registry(tmp_path, max_upload_images=3, max_image_pixels=5000, max_lora_mb=1)
    with pytest.raises(error) as err:
        registry.create("k1", kind, "thing", [up(n, d) for n, d in uploads])
    assert message in err.value.message
    assert blob_files(registry) == []
    assert registry.list("k1") == []


def test_gc_keeps_referenced_blobs(registry):
    registry.create("k1", "face", "a", [up("a.png", files.png())])
    stray = registry.blobs.commit(registry.blobs.stage_bytes(b"orphan"))
    (registry.blobs.tmp / "stage-crashed").write_bytes(b"half")
    removed = registry.gc()
    assert len(removed) == 2 and not stray.exists()
    assert registry.resolve("k1", "face", "a", 1).files[0].is_file()
