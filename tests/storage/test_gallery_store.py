"""The gallery store on its own: files and thumbnails, per-owner listing, search, paging, retention, deletes;
on SQLite and on PostgreSQL (skipped where PostgreSQL is not installed, as in tests/avatars/test_postgres.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import inspect, update

from pictale.storage.db import Database
from pictale.storage.gallery import DAY, GalleryImageRow, GalleryStore, NewImage
from pictale.storage.infotext import encode_image
from tests.avatars.postgres import fresh_database, postgres_server


def png(seed: int = 0, size=(64, 48), fmt: str = "png") -> bytes:
    img = Image.new("RGB", size, (seed * 40 % 256, 90, 200))
    return encode_image(img, f"picture {seed}\nSteps: 2, Seed: {seed}, Size: {size[0]}x{size[1]}", fmt)


def new(prompt: str, seed: int = 0, negative: str = "", **kw) -> NewImage:
    return NewImage(data=png(seed, **kw), prompt=prompt, negative_prompt=negative, seed=seed, model="tiny")


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pictale.db'}"
    else:
        url = fresh_database(request.getfixturevalue("pg_server"), "gallery")
    db = Database(url)
    db.migrate()
    yield GalleryStore(db, tmp_path / "gallery")
    db.dispose()


def age(store: GalleryStore, image_id: str, days: float) -> None:
    """Make an image look `days` older than it is."""
    with store.db.session() as s:
        s.execute(
            update(GalleryImageRow)
            .where(GalleryImageRow.id == image_id)
            .values(created_at=GalleryImageRow.created_at - days * DAY)
        )


def test_migration_creates_the_table(store):
    assert store.db.revision() == "0006"
    columns = {c["name"] for c in inspect(store.db.engine).get_columns("gallery_images")}
    assert {"id", "owner_id", "created_at", "job_id", "prompt", "negative_prompt", "seed", "width", "height"} <= columns
    assert {"model", "infotext", "file", "size"} <= columns
    store.db.downgrade("0005")
    assert "gallery_images" not in inspect(store.db.engine).get_table_names()
    store.db.migrate()
    assert "gallery_images" in inspect(store.db.engine).get_table_names()


def test_add_writes_the_exact_bytes_and_a_small_thumbnail(store):
    data = png(3, size=(640, 320))
    (image,) = store.add("k1", "job1", [NewImage(data=data, prompt="a cat", seed=3, infotext="a cat\nSteps: 2")])
    assert image.id.startswith("img_") and image.owner == "k1" and image.job_id == "job1"
    assert (image.width, image.height, image.size, image.seed) == (640, 320, len(data), 3)
    assert store.read(image) == data and image.media_type == "image/png" and image.extension == "png"
    thumb = Image.open(io.BytesIO(store.read_thumbnail(image)))
    assert thumb.format == "WEBP" and thumb.size == (256, 128)
    assert store.get("k1", image.id) == image
    assert store.get("k2", image.id) is None  # another owner's id is not found


def test_other_formats_keep_their_type(store):
    (image,) = store.add("k1", None, [NewImage(data=png(1, fmt="jpeg"), prompt="x")])
    assert (image.extension, image.media_type) == ("jpg", "image/jpeg")
    assert Image.open(io.BytesIO(store.read(image))).format == "JPEG"


def test_list_is_newest_first_per_owner_and_pages(store):
    first = store.add("k1", "j1", [new("a red fox", 1), new("a blue fox", 2)])
    second = store.add("k1", "j2", [new("a green owl", 3)])
    store.add("k2", "j3", [new("a red fox", 4)])
    images, more = store.list("k1")
    assert [i.id for i in images] == [second[0].id, first[1].id, first[0].id] and not more
    page1, more = store.list("k1", limit=2)
    assert [i.id for i in page1] == [second[0].id, first[1].id] and more
    page2, more = store.list("k1", limit=2, before=page1[-1])
    assert [i.id for i in page2] == [first[0].id] and not more
    assert store.count("k1") == 3 and store.count("k2") == 1 and store.list("nobody") == ([], False)


def test_search_is_case_insensitive_over_both_prompts_and_escapes_like(store):
    store.add("k1", None, [new("A Red Fox", 1), new("an owl", 2, negative="RED eyes"), new("100% owl_x", 3)])
    store.add("k1", None, [new("1000 owls", 4), new("owlyx", 5)])
    assert {i.seed for i in store.list("k1", q="red")[0]} == {1, 2}
    assert {i.seed for i in store.list("k1", q="fOX")[0]} == {1}
    assert {i.seed for i in store.list("k1", q="0%")[0]} == {3}  # % is a character, not a wildcard
    assert {i.seed for i in store.list("k1", q="owl_")[0]} == {3}  # and so is _
    assert store.list("k2", q="red") == ([], False)


def test_delete_removes_row_and_files_and_only_the_owners(store):
    (image,) = store.add("k1", None, [new("x")])
    files = sorted(p for p in store.root.rglob("*") if p.is_file())
    assert len(files) == 2
    assert store.delete("k2", image.id) is False and store.get("k1", image.id) is not None
    assert store.delete("k1", image.id) is True
    assert store.get("k1", image.id) is None and not any(p.exists() for p in files)
    assert store.delete("k1", image.id) is False


def test_missing_files_read_as_none_and_delete_still_works(store):
    (image,) = store.add("k1", None, [new("x")])
    for p in store.root.rglob("*"):
        if p.is_file():
            p.unlink()
    assert store.read(image) is None and store.read_thumbnail(image) is None
    assert store.delete("k1", image.id) is True


def test_purge_by_age(store):
    old, fresh = store.add("k1", None, [new("old", 1)])[0], store.add("k2", None, [new("fresh", 2)])[0]
    age(store, old.id, 31)
    assert store.purge(days=0) == 0  # 0: keep forever
    assert store.purge(days=30, owner="k2") == 0  # only k2's images
    assert store.purge(days=30) == 1
    assert store.get("k1", old.id) is None and store.get("k2", fresh.id) is not None
    assert not (store.root / old.file).exists()


def test_purge_by_count_keeps_the_newest_per_owner(store):
    k1 = [store.add("k1", None, [new(f"p{i}", i)])[0] for i in range(4)]
    k2 = store.add("k2", None, [new("q", 9)])
    assert store.purge(max_images=0) == 0  # 0: no limit
    assert store.purge(max_images=2, owner="k1") == 2
    assert [i.id for i in store.list("k1")[0]] == [k1[3].id, k1[2].id]
    assert store.purge(max_images=1) == 1  # every owner
    assert [i.id for i in store.list("k1")[0]] == [k1[3].id] and store.list("k2")[0][0].id == k2[0].id


def test_remove_orphans_keeps_what_rows_name(store):
    (image,) = store.add("k1", None, [new("x")])
    stray = store.root / "zz" / "img_zz00.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    half = store.root / image.file[:2] / f".{image.id}.png.abc.tmp"
    half.write_bytes(b"x")
    assert store.remove_orphans() == 2
    assert store.read(image) is not None and store.read_thumbnail(image) is not None
    assert not stray.exists() and not half.exists()


def test_a_bad_image_writes_nothing(store):
    with pytest.raises(Exception):  # noqa: B017 - Pillow's own error
        store.add("k1", None, [new("ok", 1), NewImage(data=b"not an image")])
    assert store.count("k1") == 0 and not [p for p in store.root.rglob("*") if p.is_file()]
