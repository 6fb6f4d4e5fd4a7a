"""Read a JSON body as JSON whatever Content-Type came with it (`curl -d '{...}'` says form-urlencoded)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_KEEP = (b"application/json", b"multipart/form-data")


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ("" when none was sent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json_type(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


class JsonBodyMiddleware:
    """A body sent without a JSON Content-Type that is a JSON object or array is passed on as
    `application/json`; anything else is passed on untouched (routes then say which type they read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        main = ctype.split(b";", 1)[0].strip().lower()
        if main.startswith(_KEEP) or main.endswith(b"+json"):
            await self.app(scope, receive, send)
            return
        body, first = await _read_all(receive)
        if body.lstrip()[:1] in (b"{", b"["):
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first if first["type"] == "http.disconnect" else {"type": "http.request", "body": body}
            return await receive()  # later reads wait for the client's disconnect, as before

        await self.app(scope, replay, send)


async def _read_all(receive: Receive) -> tuple[bytes, Message]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), message
