"""`GET /v1/files/{token}`: the links `url` responses point at. The unguessable token is the credential, so
an `<img src>` works without headers; only images are served, and links expire."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from pictale.core.errors import PictaleError

router = APIRouter(prefix="/v1")


class FileNotFound(PictaleError):
    status = 404
    code = "file_not_found"


@router.get("/files/{token}", response_class=FileResponse)
async def get_file(request: Request, token: str) -> FileResponse:
    found = request.app.state.files.get(token)
    if found is None:
        raise FileNotFound("no such file, or its link has expired", param="token")
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
