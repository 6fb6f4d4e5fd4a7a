"""`/v1/avatars`: upload, list, show, patch, delete avatars and their thumbnails, for the calling key only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict

from pictale.api.auth import require_auth
from pictale.avatars.registry import AvatarInfo, AvatarRegistry
from pictale.avatars.validate import IMAGE_KINDS
from pictale.core.types import Principal

router = APIRouter(prefix="/v1", tags=["avatars"])
Caller = Annotated[Principal, Depends(require_auth)]
Files = Annotated[list[UploadFile] | None, File()]


def registry(request: Request) -> AvatarRegistry:
    return request.app.state.avatars


Registry = Annotated[AvatarRegistry, Depends(registry)]


def avatar_json(info: AvatarInfo) -> dict:
    thumb = f"/v1/avatars/{info.kind.value}/{info.name}/thumbnail" if info.kind in IMAGE_KINDS else None
    return info.to_json() | {"thumbnail_url": thumb}


class AvatarPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    trigger_words: list[str] | str | None = None
    token: str | None = None


@router.post("/avatars", status_code=201)
def create_avatar(
    caller: Caller,
    avatars: Registry,
    kind: Annotated[str, Form()],
    name: Annotated[str, Form()],
    trigger_words: Annotated[str | None, Form()] = None,
    token: Annotated[str | None, Form()] = None,
    files: Files = None,
    file: Files = None,
    files_list: Annotated[list[UploadFile] | None, File(alias="files[]")] = None,
) -> dict:
    """Multipart: `kind`, `name`, files in `files` (or `file`, `files[]`), optional `trigger_words`, `token`."""
    uploads = [*(files or ()), *(file or ()), *(files_list or ())]
    info = avatars.create(
        caller.id,
        kind,
        name,
        [(u.filename, u.file) for u in uploads],
        trigger_words=trigger_words,
        token=token or None,
    )
    return avatar_json(info)


@router.get("/avatars")
def list_avatars(caller: Caller, avatars: Registry, kind: str | None = None) -> dict:
    return {"object": "list", "data": [avatar_json(a) for a in avatars.list(caller.id, kind or None)]}


@router.get("/avatars/{kind}/{name}")
def show_avatar(caller: Caller, avatars: Registry, kind: str, name: str) -> dict:
    return avatar_json(avatars.get(caller.id, kind, name))


@router.patch("/avatars/{kind}/{name}")
def patch_avatar(caller: Caller, avatars: Registry, kind: str, name: str, patch: AvatarPatch) -> dict:
    """JSON: `trigger_words` (list or comma-separated), `token` (embeddings), `name` (rename)."""
    info = avatars.update(
        caller.id, kind, name, trigger_words=patch.trigger_words, token=patch.token, new_name=patch.name
    )
    return avatar_json(info)


@router.delete("/avatars/{kind}/{name}")
def delete_avatar(caller: Caller, avatars: Registry, kind: str, name: str) -> dict:
    info = avatars.get(caller.id, kind, name)
    avatars.delete(caller.id, kind, name)
    return {"kind": info.kind.value, "name": info.name, "deleted": True}


@router.get("/avatars/{kind}/{name}/thumbnail")
def avatar_thumbnail(caller: Caller, avatars: Registry, kind: str, name: str) -> Response:
    """A PNG of the first image (face, style, pose); 404 for lora and embedding avatars."""
    return Response(avatars.thumbnail(caller.id, kind, name), media_type="image/png")
