"""API keys over HTTP: open mode, Bearer and Basic-with-key on every dialect, admin-only key management."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from tests.avatars import files

LOOPBACK = ("127.0.0.1", 50000)
"""The first key is made over HTTP only from the server itself: these clients call from loopback."""


def make_app(tmp_path, tiny_models, client=LOOPBACK, **overrides) -> TestClient:
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]), **overrides)
    return TestClient(create_app(settings), client=client)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models):
    """Starts open; the tests below run in order and close it by creating the first key."""
    with make_app(tmp_path_factory.mktemp("keys-api"), tiny_models) as client:
        yield client


def test_open_mode_accepts_anything(app):
    auth = app.app.state.auth
    assert auth.open_mode and auth.describe().startswith("open (local single user")
    for headers in ({}, {"Authorization": ""}, bearer("anything"), basic("x", "y"), {"Authorization": "Token z"}):
        assert app.get("/sdapi/v1/options", headers=headers).status_code == 200
        assert app.get("/v1/avatars", headers=headers).status_code == 200
    assert app.get("/v1/keys").json() == {"object": "list", "data": []}  # the local user is the admin


def test_first_key_closes_the_server(app):
    r = app.post("/v1/keys", json={"name": "admin", "admin": True})
    assert r.status_code == 201
    body = r.json()
    assert body["key"].startswith("pt-") and body["admin"] is True and body["name"] == "admin"
    app.admin_key, app.admin_id = body["key"], body["id"]
    assert not app.app.state.auth.open_mode and app.app.state.auth.describe() == "API keys (1)"
    for path in ("/sdapi/v1/options", "/v1/avatars", "/v1/keys"):
        r = app.get(path)
        assert r.status_code == 401, path
        assert "www-authenticate" in r.headers
    r = app.get("/sdapi/v1/options")
    assert r.json()["detail"] == "Not authenticated" and r.headers["www-authenticate"].startswith("Basic")
    r = app.get("/v1/avatars", headers=bearer("pt-not-a-key"))
    assert r.json()["error"]["message"] == "Invalid API key"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert app.get("/sdapi/v1/options", headers={"Authorization": ""}).status_code == 401


def test_bearer_and_basic_with_the_key_work_on_every_dialect(app):
    assert app.get("/sdapi/v1/options", headers=bearer(app.admin_key)).status_code == 200
    assert app.get("/sdapi/v1/sd-models", headers=bearer(app.admin_key)).status_code == 200
    # SillyTavern can only send Basic: the key as password, any user name
    assert app.get("/sdapi/v1/options", headers=basic("sillytavern", app.admin_key)).status_code == 200
    assert app.get("/sdapi/v1/options", headers=basic("", app.admin_key)).status_code == 200
    assert app.get("/v1/avatars", headers=basic("x", app.admin_key)).status_code == 200
    assert app.get("/sdapi/v1/options", headers=basic("x", "pt-wrong")).status_code == 401


def test_only_admins_manage_keys(app):
    r = app.post("/v1/keys", json={"name": "reader"}, headers=bearer(app.admin_key))
    assert r.status_code == 201 and r.json()["admin"] is False
    user_key, user_id = r.json()["key"], r.json()["id"]
    for method, path, kw in [
        ("post", "/v1/keys", {"json": {"name": "mine", "admin": True}}),
        ("get", "/v1/keys", {}),
        ("delete", f"/v1/keys/{app.admin_id}", {}),
    ]:
        r = app.request(method, path, headers=bearer(user_key), **kw)
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["message"] == "only admin API keys can manage keys"
    listing = app.get("/v1/keys", headers=bearer(app.admin_key)).json()
    assert [k["name"] for k in listing["data"]] == ["admin", "reader"]
    assert "key" not in listing["data"][0] and user_key not in str(listing)
    assert app.get("/v1/avatars", headers=bearer(user_key)).status_code == 200
    r = app.delete(f"/v1/keys/{user_id}", headers=bearer(app.admin_key))
    assert r.json() == {"id": user_id, "deleted": True}
    assert app.get("/v1/avatars", headers=bearer(user_key)).status_code == 401
    r = app.delete(f"/v1/keys/{user_id}", headers=bearer(app.admin_key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"


def test_api_auth_basic_keeps_working_beside_keys(tmp_path, tiny_models):
    with make_app(tmp_path, tiny_models, api_auth="alice:s3cret") as c:
        assert c.app.state.auth.describe() == "HTTP Basic"
        assert c.get("/sdapi/v1/options", headers=bearer("anything")).status_code == 401
        _, key = c.app.state.keys.create("bot")
        assert c.app.state.auth.describe() == "API keys (1) + HTTP Basic"
        assert c.get("/sdapi/v1/options", headers=basic("alice", "s3cret")).status_code == 200
        assert c.get("/sdapi/v1/options", headers=basic("alice", "wrong")).status_code == 401
        assert c.get("/sdapi/v1/options", headers=bearer(key)).status_code == 200
        assert c.get("/sdapi/v1/options", headers=basic("bot", key)).status_code == 200
        assert c.get("/sdapi/v1/options").status_code == 401
        # the Basic user is an owner of its own: its avatars are not the key's
        r = c.post(
            "/v1/avatars",
            data={"kind": "face", "name": "me"},
            files=[("files", ("a.png", files.png(), "image/png"))],
            headers=basic("alice", "s3cret"),
        )
        assert r.status_code == 201
        assert c.get("/v1/avatars/face/me", headers=basic("alice", "s3cret")).status_code == 200
        assert c.get("/v1/avatars/face/me", headers=bearer(key)).status_code == 404
        assert c.app.state.avatars.names("basic:alice", "face") == ["me"]
        assert c.post("/v1/keys", json={"name": "k2"}, headers=basic("alice", "s3cret")).status_code == 201
