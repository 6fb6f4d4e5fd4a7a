"""/docs and /redoc work offline: every asset they load is served by pictale, and they need no key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings

SRC = Path(__file__).resolve().parents[2] / "src"
CDN = re.compile(r"cdn\.|unpkg|jsdelivr", re.IGNORECASE)


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """An app with auth on (an API key and a Basic user); the lifespan (model loading) is not needed."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("docs"), api_auth="u:p"))
    app.state.keys.create("alice")
    return TestClient(app)


def referenced(html: str) -> list[str]:
    """Every URL the page loads: link/script/img targets and the spec URL given to Swagger UI or ReDoc."""
    urls = re.findall(r'(?:href|src|spec-url)="([^"]*)"', html)
    urls += re.findall(r"url: '([^']*)'", html)
    return urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets_without_a_key(locked, page):
    assert locked.get("/sdapi/v1/options").status_code == 401  # auth is really on
    r = locked.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text and not CDN.search(r.text)
    urls = referenced(r.text)
    assert "/openapi.json" in urls and any(u.endswith(".js") for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = locked.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
        assert not CDN.search(asset.text), f"{url} still points at a CDN"
    if page == "/docs":
        assert locked.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")
        assert locked.get("/docs/oauth2-redirect").status_code == 200


def test_redoc_logo_points_home(locked):
    js = locked.get("/docs-assets/redoc.standalone.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "Redoc" in js.text and "logo-mini.svg" not in js.text
    assert 'src:"docs-assets/favicon.png"' in js.text


def test_the_api_schema_lists_routes_not_the_docs(locked):
    paths = locked.get("/openapi.json").json()["paths"]
    assert "/sdapi/v1/txt2img" in paths
    assert not any(p.startswith(("/docs", "/redoc")) for p in paths)


def test_no_cdn_anywhere_in_src():
    hits = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*")
        if path.is_file() and path.suffix in {".py", ".html", ".js", ".css", ".json", ".md", ".txt"}
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if CDN.search(line)
    ]
    assert hits == []
