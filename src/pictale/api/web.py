"""The web UI: `GET /` serves `web/static/index.html`, `/static/...` its scripts, styles and vendored modules.

Everything the browser loads comes from pictale (no CDN, no web font); the Content-Security-Policy says so to
the browser too: scripts, styles, images and connections are same-origin only (images also `blob:`/`data:`,
which the UI makes from authenticated fetches). The one inline script, the import map, is allowed by its hash.
The UI calls the public API with the user's key, like any other client.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import mimetypes
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
_IMPORT_MAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.S)


@functools.cache
def _index() -> tuple[bytes, str]:
    html = (STATIC / "index.html").read_bytes()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'" for m in _IMPORT_MAP.findall(html)
    )
    csp = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self' blob:; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'self'"
    )
    return html, csp


def install_web(app: FastAPI) -> None:
    """Mount the UI. `/static` is a sub-path, so it never shadows `/sdapi`, `/v1` or `/docs`."""
    # Some Windows registries map .js to text/plain, which browsers refuse for module scripts.
    for ext, kind in ((".js", "text/javascript"), (".mjs", "text/javascript"), (".css", "text/css")):
        mimetypes.add_type(kind, ext)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        html, csp = _index()
        headers = {"Content-Security-Policy": csp, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(html, headers=headers)
