"""One exception handler per dialect: the error tree rendered in the caller's shape (DESIGN.md rule 3).

`/sdapi/...` answers in A1111's shapes; everything else (`/v1/...`: the OpenAI images dialect and pictale's
own API) in OpenAI's `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pictale.core.errors import PictaleError, QueueFull

log = logging.getLogger(__name__)

OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
}


def is_a1111(request: Request) -> bool:
    return request.url.path.startswith("/sdapi/")


def openai_status(request: Request, status: int) -> int:
    """The OpenAI images dialect answers invalid requests with 400 where pictale's own API says 422."""
    if status == 422 and request.url.path.startswith("/v1/images"):
        return 400
    return status


def a1111_body(error: str, detail: str, status: int) -> dict:
    """A1111's error shape: `{error, detail, body, errors}`."""
    return {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}" if detail else ""}


def openai_body(message: str, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _headers(exc: Exception, a1111: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    if getattr(exc, "status", None) == 401:
        # A1111 clients speak Basic; the OpenAI dialect and pictale's own API use Bearer keys.
        headers["WWW-Authenticate"] = 'Basic realm="pictale", charset="UTF-8"' if a1111 else 'Bearer realm="pictale"'
    return headers


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PictaleError)
    async def pictale_error(request: Request, exc: PictaleError) -> JSONResponse:
        if is_a1111(request):
            body = a1111_body(type(exc).__name__, exc.message, exc.status)
            return JSONResponse(body, status_code=exc.status, headers=_headers(exc, True))
        status = openai_status(request, exc.status)
        body = openai_body(exc.message, status, param=exc.param, code=exc.code)
        return JSONResponse(body, status_code=status, headers=_headers(exc, False))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        if is_a1111(request):
            # FastAPI's own shape, as A1111 answers: {"detail": [{"loc", "msg", "type"}]}
            return JSONResponse({"detail": errors}, status_code=422)
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        status = openai_status(request, 422)
        return JSONResponse(openai_body(message, status, param=param, code="invalid_value"), status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        if is_a1111(request):
            return JSONResponse(a1111_body(type(exc).__name__, "", 500) | {"errors": str(exc)}, status_code=500)
        return JSONResponse(openai_body(f"internal error: {type(exc).__name__}", 500), status_code=500)
