"""One exception handler per dialect: the error tree rendered in the caller's shape (DESIGN.md rule 3)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pictale.core.errors import PictaleError, QueueFull

log = logging.getLogger(__name__)


def a1111_body(error: str, detail: str, status: int) -> dict:
    """A1111's error shape: `{error, detail, body, errors}`."""
    return {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}" if detail else ""}


def _headers(exc: Exception) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    if getattr(exc, "status", None) == 401:
        headers["WWW-Authenticate"] = 'Basic realm="pictale", charset="UTF-8"'
    return headers


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PictaleError)
    async def pictale_error(request: Request, exc: PictaleError) -> JSONResponse:
        body = a1111_body(type(exc).__name__, exc.message, exc.status)
        return JSONResponse(body, status_code=exc.status, headers=_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own shape, as A1111 answers: {"detail": [{"loc", "msg", "type"}]}
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(a1111_body(type(exc).__name__, "", 500) | {"errors": str(exc)}, status_code=500)
