"""`/v1/gallery`: the images the calling key generated (A1111, OpenAI, /v1/jobs, /v1/story/imagine), newest first.

- `GET /v1/gallery?q=&limit=&before=`: `{"object": "list", "data": [item...], "has_more": bool}`; `q` finds a
  case-insensitive substring of the prompt or negative prompt; `limit` 1..200 (default 50); `before` is the id
  of the last item of the previous page (an id the key does not have, e.g. one deleted since: 422 naming it).
- `GET /v1/gallery/{id}`: the item; `/image`: the exact bytes the client got; `/thumbnail`: a WebP, 256 px at most.
- `DELETE /v1/gallery/{id}`: `{"id", "object": "gallery.image", "deleted": true}`.

Another key's id is a 404 exactly like a missing one; so is an image whose file was removed by hand.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from pictale.api.auth import require_auth
from pictale.core.errors import GalleryImageNotFound, InvalidRequest
from pictale.core.types import Principal
from pictale.service.gallery import GalleryRecorder
from pictale.storage.gallery import GalleryImage
from pictale.storage.infotext import parse_infotext

router = APIRouter(prefix="/v1", tags=["gallery"])
Caller = Annotated[Principal, Depends(require_auth)]
OBJECT = "gallery.image"


def recorder(request: Request) -> GalleryRecorder:
    return request.app.state.gallery


Recorder = Annotated[GalleryRecorder, Depends(recorder)]


def view(image: GalleryImage) -> dict[str, Any]:
    url = f"/v1/gallery/{image.id}"
    return {
        "id": image.id,
        "object": OBJECT,
        "created": int(image.created),
        "job_id": image.job_id,
        "prompt": image.prompt,
        "negative_prompt": image.negative_prompt,
        "seed": image.seed,
        "width": image.width,
        "height": image.height,
        "model": image.model,
        "infotext": image.infotext,
        "parameters": parse_infotext(image.infotext) if image.infotext else {},
        "image_url": f"{url}/image",
        "thumbnail_url": f"{url}/thumbnail",
    }


def _own(gallery: GalleryRecorder, owner: str, image_id: str) -> GalleryImage:
    gallery.settle(owner)
    image = gallery.store.get(owner, image_id)
    if image is None:
        raise GalleryImageNotFound(f"no gallery image {image_id!r}", param="image_id")
    return image


def _file(image: GalleryImage, data: bytes | None, media_type: str, filename: str) -> Response:
    if data is None:
        raise GalleryImageNotFound(f"the file of gallery image {image.id!r} is gone", param="image_id")
    headers = {
        "Content-Disposition": f'inline; filename="{filename}"',
        "Cache-Control": "private, max-age=86400",  # an id never names other bytes
    }
    return Response(data, media_type=media_type, headers=headers)


@router.get("/gallery")
def list_gallery(
    caller: Caller,
    gallery: Recorder,
    q: Annotated[str | None, Query(max_length=1000, description="Substring of the prompt or negative prompt")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=64, description="Id of the last item of the previous page")] = None,
) -> dict[str, Any]:
    gallery.settle(caller.id)
    cursor = None
    if before:
        cursor = gallery.store.get(caller.id, before)
        if cursor is None:
            raise InvalidRequest(f"before: no gallery image {before!r} (deleted?); list from the start", param="before")
    images, more = gallery.store.list(caller.id, q=q or None, limit=limit, before=cursor)
    return {"object": "list", "data": [view(i) for i in images], "has_more": more}


@router.get("/gallery/{image_id}")
def get_gallery_image(caller: Caller, gallery: Recorder, image_id: str) -> dict[str, Any]:
    return view(_own(gallery, caller.id, image_id))


@router.get("/gallery/{image_id}/image", response_class=Response)
def gallery_image_file(caller: Caller, gallery: Recorder, image_id: str) -> Response:
    image = _own(gallery, caller.id, image_id)
    name = f"pictale-{image.seed if image.seed is not None else image.id}.{image.extension}"
    return _file(image, gallery.store.read(image), image.media_type, name)


@router.get("/gallery/{image_id}/thumbnail", response_class=Response)
def gallery_thumbnail(caller: Caller, gallery: Recorder, image_id: str) -> Response:
    image = _own(gallery, caller.id, image_id)
    return _file(image, gallery.store.read_thumbnail(image), "image/webp", f"{image.id}-thumbnail.webp")


@router.delete("/gallery/{image_id}")
def delete_gallery_image(caller: Caller, gallery: Recorder, image_id: str) -> dict[str, Any]:
    gallery.settle(caller.id)
    if not gallery.store.delete(caller.id, image_id):
        raise GalleryImageNotFound(f"no gallery image {image_id!r}", param="image_id")
    return {"id": image_id, "object": OBJECT, "deleted": True}
