"""Photos in, before any compute: checks, upright, face crops, aspect buckets, captions. No torch here: the service
calls this in the request thread to refuse bad uploads with one 4xx before it accepts the work.

- `check`: `check_photos` (every problem of every file in one InvalidTrainingPhotos) and `CheckedPhoto`.
- `upload`: `files_from_zip` (zip-bomb limits; `__MACOSX/` and hidden files left out), captions paired by name.
- `faces`: the offline Haar face detector from opencv-python-headless<5 and the crops around a face.
- `buckets`: aspect-ratio buckets at the training resolution.
- `captions`: the given `.txt`, else a template from the trigger, class word, framing and light.

Flip augmentation is the loop's (`TrainingSpec.flip`, mirrored latents cached beside the others); the PNGs written
here are never mirrored.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageStat

from pictale.storage.userfiles import write_atomically
from pictale.training.photos.buckets import aspect_buckets, fit_to_bucket, nearest_bucket
from pictale.training.photos.captions import captioner_dir, clean_caption, template_caption
from pictale.training.photos.check import CheckedPhoto, check_photos, decode_upright
from pictale.training.photos.faces import crop_box
from pictale.training.photos.upload import files_from_zip
from pictale.training.spec import PreparedPhoto, TrainingSpec

__all__ = ["CheckedPhoto", "captioner_dir", "check_photos", "files_from_zip", "prepare", "prepare_checked"]

PHOTOS_DIR = "photos"


def prepare(
    files: list[tuple[str, bytes]],
    spec: TrainingSpec,
    workdir: Path,
    *,
    min_images: int | None = None,
) -> list[PreparedPhoto]:
    """Check an upload (InvalidTrainingPhotos listing every problem, before anything is written), then write each
    photo upright, cropped and bucketed as `workdir/photos/NNNN.png` with its caption beside it as `NNNN.txt`."""
    checked = check_photos(files, kind=spec.kind, resolution=spec.resolution, min_images=min_images)
    return prepare_checked(checked, spec, workdir)


def prepare_checked(checked: list[CheckedPhoto], spec: TrainingSpec, workdir: Path) -> list[PreparedPhoto]:
    """Write photos that `check_photos` passed; the same photos and spec always give the same files."""
    folder = Path(workdir) / PHOTOS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in (*folder.glob("[0-9][0-9][0-9][0-9].png"), *folder.glob("[0-9][0-9][0-9][0-9].txt")):
        old.unlink()  # a new upload replaces the old set whole
    buckets = aspect_buckets(spec.resolution)
    prepared: list[PreparedPhoto] = []
    for index, photo in enumerate(checked, start=1):
        image = decode_upright(photo.data, name=photo.name)
        box = crop_box(spec.kind, photo.face, image.size, spec.resolution)
        region = image.crop(box)
        bucket = nearest_bucket(region.width, region.height, buckets)
        out = fit_to_bucket(region, bucket)
        if photo.caption is not None:
            caption = clean_caption(photo.caption, spec.trigger)
        else:
            face_height = None
            if photo.face is not None:
                face_height = round(photo.face[3] * out.height / region.height)
            caption = template_caption(
                trigger=spec.trigger,
                class_word=spec.class_word,
                kind=spec.kind,
                size=out.size,
                face_height=face_height,
                brightness=ImageStat.Stat(out.convert("L")).mean[0],
            )
        path = folder / f"{index:04d}.png"
        write_atomically(path, _png(out))
        write_atomically(path.with_suffix(".txt"), caption.encode("utf-8"))
        prepared.append(
            PreparedPhoto(
                path=str(path),
                caption=caption,
                source=photo.name,
                width=out.width,
                height=out.height,
                caption_from="file" if photo.caption is not None else "template",
            )
        )
    return prepared


def _png(image: Image.Image) -> bytes:
    """PNG bytes with no metadata and a fixed compression level: the same pixels give the same file."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
