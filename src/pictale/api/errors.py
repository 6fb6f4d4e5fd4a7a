"""One exception handler per dialect: the error tree rendered in the caller's shape (DESIGN.md rule 3).

`/sdapi/...` answers in A1111's shapes; everything else (`/v1/...`: the OpenAI images dialect and pictale's
own API) in OpenAI's `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pictale.api.body import content_type, is_json_type
from pictale.core.errors import InvalidRequest, MalformedBody, PictaleError, QueueFull, UnsupportedMediaType

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


BODY_PARSE_ERROR = "There was an error parsing the body"
"""FastAPI's words when the JSON body cannot be read (e.g. nested too deeply): rendered as our own 400."""


def body_problem(request: Request, errors: list[dict]) -> PictaleError | None:
    """A validation error about the body as a whole (empty, not an object, not JSON, not a form), said plainly."""
    whole = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    ctype = content_type(request)
    form_fields = [e for e in errors if len(e.get("loc", ())) == 2 and e["loc"][0] == "body"]
    not_form = ctype not in ("multipart/form-data", "application/x-www-form-urlencoded")
    if form_fields and not_form and _route_reads_form(request):
        return UnsupportedMediaType(
            f"body: this route reads multipart/form-data (got {ctype or 'no Content-Type'})", param="body"
        )
    if not whole:
        return None
    if (ctype and not is_json_type(ctype)) or (not ctype and whole[0].get("type") != "missing"):
        return UnsupportedMediaType(
            f"body: send a JSON object with Content-Type: application/json (got {ctype or 'no Content-Type'})",
            param="body",
        )
    if whole[0].get("type") == "missing":
        return InvalidRequest("body: a JSON object is required (the request body is empty)", param="body")
    return InvalidRequest('body: must be a JSON object, e.g. {"prompt": "a cat"}', param="body")


def _route_reads_form(request: Request) -> bool:
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return isinstance(getattr(body_field, "field_info", None), params.Form)  # File is a Form too


def _render(request: Request, exc: PictaleError) -> JSONResponse:
    if is_a1111(request):
        body = a1111_body(exc.code, exc.message, exc.status)
        return JSONResponse(body, status_code=exc.status, headers=_headers(exc, True))
    status = openai_status(request, exc.status)
    body = openai_body(exc.message, status, param=exc.param, code=exc.code)
    problems = getattr(exc, "problems", None)
    if problems is not None:  # InvalidTrainingPhotos: each file and its problem, for a UI to show per file
        body["error"]["problems"] = problems
    return JSONResponse(body, status_code=status, headers=_headers(exc, False))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PictaleError)
    async def pictale_error(request: Request, exc: PictaleError) -> JSONResponse:
        return _render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        problem = body_problem(request, errors)
        if problem is not None:
            return _render(request, problem)
        if is_a1111(request):
            # FastAPI's own shape, as A1111 answers: {"detail": [{"loc", "msg", "type"}]}
            return JSONResponse({"detail": errors}, status_code=422)
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        status = openai_status(request, 422)
        return JSONResponse(openai_body(message, status, param=param, code="invalid_value"), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own errors (unknown route, wrong method, unreadable body) in the caller's dialect."""
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == BODY_PARSE_ERROR:
            return _render(
                request, MalformedBody("body: not valid JSON (malformed or nested too deeply)", param="body")
            )
        if is_a1111(request):
            return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)
        body = openai_body(detail, exc.status_code, code=detail.lower().replace(" ", "_"))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The server log has the traceback; the client gets no exception name, message or stack.
        log.exception("unhandled error on %s", request.url.path)
        message = "internal error: the server log has the details"
        if is_a1111(request):
            return JSONResponse(a1111_body("internal_error", message, 500), status_code=500)
        return JSONResponse(openai_body(message, 500, code="internal_error"), status_code=500)
