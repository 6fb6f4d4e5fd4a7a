"""The web UI's files as served by the app (FastAPI's TestClient): `/`, `/static/...`, the CSP, `/v1/server`,
`/v1/me`; every file the UI ships refers to no address outside the server; the vendored files match their
lock. The browser tests (tests/browser/) drive the pages themselves."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

from pictale import __version__
from pictale.api.web import STATIC
from tests.api.conftest import make_client

REPO = Path(__file__).resolve().parents[2]
# XML namespace names: identifiers inside Preact and the SVG icon, never fetched
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1998/Math/MathML", "http://www.w3.org/1999/xhtml"}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    with make_client(tmp_path_factory.mktemp("web"), tiny_models) as c:
        yield c


def test_index_is_the_ui_with_a_same_origin_policy(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    assert '<div id="app"></div>' in html and 'src="static/app.js"' in html
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self' blob:" in csp and "object-src 'none'" in csp
    # the one inline script (the import map) is allowed by its hash, and nothing else inline is
    inline = re.search(r'<script type="importmap">(.*?)</script>', html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # `/` is not in the API's schema, and the mount does not shadow the API or the docs
    assert "/" not in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/sdapi/v1/samplers").status_code == 200


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/lib/api.js", "text/javascript"),
        ("/static/vendor/preact.module.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files_are_served_with_module_friendly_types(client, path, kind):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == kind
    assert r.content == (STATIC / path.removeprefix("/static/")).read_bytes()


def test_missing_static_file_is_404(client):
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../pyproject.toml").status_code == 404


def test_server_info_needs_no_key_and_says_what_the_ui_needs(client):
    r = client.get("/v1/server")
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "object": "server",
        "version": __version__,
        "auth_required": False,
        "model": body["model"],
        "demo": False,
        "notes": [],
        "speed": {"compiled": False, "compile_seconds": None, "compile_sizes": [], "low_vram": False, "notes": []},
    }
    assert body["model"].startswith("tiny")


def test_me_is_the_local_user_in_open_mode(client):
    assert client.get("/v1/me").json() == {"object": "principal", "id": "local", "name": "local", "admin": True}


def test_with_keys_the_server_info_asks_for_one_and_me_names_the_key(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models) as c:
        c.app.state.keys.create("teacher", admin=True)
        record, pupil = c.app.state.keys.create("pupil")
        assert c.get("/v1/server").json()["auth_required"] is True
        r = c.get("/v1/me")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        me = c.get("/v1/me", headers={"Authorization": f"Bearer {pupil}"}).json()
        assert me == {"object": "principal", "id": record.id, "name": "pupil", "admin": False}
        # the page itself and its files load without a key: they hold nothing but the UI
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200


def test_the_demo_model_is_flagged(tmp_path):
    from fastapi.testclient import TestClient

    from pictale.api.app import create_app
    from pictale.core.config import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path, model="tiny"))) as c:
        body = c.get("/v1/server").json()
    assert body["demo"] is True and body["model"].startswith("pictale-demo")


def _addresses(text: str) -> set[str]:
    return set(re.findall(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)<>]*""", text))


def test_no_page_script_or_style_refers_to_an_address_outside_the_server():
    found = {}
    for path in STATIC.rglob("*"):
        if path.is_file() and path.suffix in {".html", ".js", ".css", ".svg", ".json"}:
            outside = {a for a in _addresses(path.read_text()) if "http:" + a.split(":", 1)[-1] not in NAMESPACES}
            outside -= NAMESPACES
            if outside:
                found[str(path.relative_to(STATIC))] = sorted(outside)
    assert found == {}
    # the check itself finds addresses (a CDN URL, a protocol-relative one, a font import)
    sample = 'import x from "https://cdn.jsdelivr.net/npm/preact"; @import url(//fonts.googleapis.com/css?f=x);'
    assert _addresses(sample) == {"https://cdn.jsdelivr.net/npm/preact", "//fonts.googleapis.com/css?f=x"}


def test_vendored_files_match_their_lock():
    spec = importlib.util.spec_from_file_location("vendor_js", REPO / "scripts" / "vendor_js.py")
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    manifest = vendor.json.loads(vendor.MANIFEST.read_text())
    assert vendor.check(manifest) == []
    # every vendored file is in the lock, with its licence next to it
    lock = vendor.json.loads((STATIC / "vendor" / "vendor.lock.json").read_text())["packages"]
    assert {spec: entry["license"] for spec, entry in lock.items()} == {
        "preact@10.29.8": "MIT",
        "htm@3.1.1": "Apache-2.0",
    }
    shipped = {p.name for p in (STATIC / "vendor").iterdir()} - {"vendor.lock.json"}
    assert shipped == {name for entry in lock.values() for name in entry["files"]}
