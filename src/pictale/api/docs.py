"""`/docs` (Swagger UI) and `/redoc` with every asset served by pictale, so they work offline.

FastAPI's own pages load their JavaScript, CSS and favicon from CDNs. The assets here come from the
fastapi-offline package (Swagger UI's bundle, ReDoc's standalone bundle, a favicon). ReDoc's bundle also
draws its "API docs by Redocly" logo from its CDN; that one URL is pointed at the local favicon. The pages
and assets need no key: they hold nothing but the API's shape, which `/openapi.json` already gives.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
_REMOTE_LOGO = re.compile(rb'src:"https?://[^"]*/logo-mini\.svg"')


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


@functools.cache
def _redoc_js() -> bytes:
    data = (_assets_dir() / "redoc.standalone.js").read_bytes()
    # relative to the page (/redoc), so it also works behind a root path
    return _REMOTE_LOGO.sub(f'src:"{ASSETS.lstrip("/")}/favicon.png"'.encode(), data)


def install_docs(app: FastAPI) -> None:
    """Add /docs, its OAuth2 redirect page, /redoc and the assets they load (the app has docs_url=None)."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect_url,
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from the online validator
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(f"{ASSETS}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(_redoc_js(), media_type="text/javascript")

    app.mount(ASSETS, StaticFiles(directory=_assets_dir()), name="docs-assets")
