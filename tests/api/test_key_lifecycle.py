"""The first key and the last: who may make the first key, what it adopts, and how the server reopens."""

from __future__ import annotations

import pytest

from pictale.accounts import lifecycle
from pictale.storage.books import BookStore
from tests.api.test_keys_api import bearer, make_app
from tests.avatars import files

FAST = {"prompt": "a photo of a cat", "steps": 2, "width": 64, "height": 64, "seed": 7}


@pytest.mark.parametrize("host", ["testclient", "192.168.1.20", "10.0.0.7", "2001:db8::1"])
def test_in_open_mode_only_loopback_makes_the_first_key(tmp_path, tiny_models, host):
    with make_app(tmp_path, tiny_models, client=(host, 40000)) as c:
        r = c.post("/v1/keys", json={"name": "me", "admin": True})
        assert r.status_code == 403
        assert r.json()["error"]["message"].startswith("in open mode the first API key can only be made")
        assert "pictale keys create NAME --admin" in r.json()["error"]["message"]
        assert c.app.state.auth.open_mode and c.app.state.keys.count() == 0
        assert c.get("/v1/avatars").status_code == 200  # still open for everyone


def test_the_first_key_must_be_an_admin_key(tmp_path, tiny_models):
    with make_app(tmp_path, tiny_models, client=("::1", 40000)) as c:
        r = c.post("/v1/keys", json={"name": "bot"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "admin"
        assert "the first API key must be an admin key" in r.json()["error"]["message"]
        assert c.app.state.auth.open_mode
        r = c.post("/v1/keys", json={"name": "root", "admin": True})  # IPv6 loopback works too
        assert r.status_code == 201 and not c.app.state.auth.open_mode


def test_first_key_adopts_open_mode_things_and_the_last_key_gives_them_back(tmp_path, tiny_models):
    with make_app(tmp_path, tiny_models) as c:
        # made in open mode by the local user
        r = c.post("/v1/avatars", data={"kind": "face", "name": "lucy"}, files=[("files", ("a.png", files.png()))])
        assert r.status_code == 201
        assert c.post("/v1/characters", json={"name": "sasha", "description": "a girl"}).status_code == 201
        BookStore(c.app.state.db).create("book_local", "local", "A book", {}, {"pages": []})
        job = c.post("/v1/jobs", json=FAST).json()
        # the first key takes them over, and says so
        r = c.post("/v1/keys", json={"name": "root", "admin": True})
        assert r.status_code == 201
        root = r.json()
        assert root["adopted"] == {"avatars": 1, "characters": 1, "books": 1, "trainings": 0, "kept": []}
        assert root["webhook_secret"].startswith("whsec_") and root["key"].startswith("pt-")
        me = bearer(root["key"])
        assert [a["name"] for a in c.get("/v1/avatars", headers=me).json()["data"]] == ["lucy"]
        assert [ch["name"] for ch in c.get("/v1/characters", headers=me).json()["data"]] == ["sasha"]
        assert c.get(f"/v1/jobs/{job['id']}", headers=me).status_code == 200
        assert BookStore(c.app.state.db).get("book_local", owner=root["id"]) is not None
        # a later key adopts nothing and sees none of it
        r = c.post("/v1/keys", json={"name": "bob"}, headers=me)
        assert r.status_code == 201 and r.json()["adopted"] is None
        bob = r.json()
        assert c.get("/v1/avatars", headers=bearer(bob["key"])).json()["data"] == []
        assert c.get(f"/v1/jobs/{job['id']}", headers=bearer(bob["key"])).status_code == 404
        # over HTTP the last admin key cannot be revoked: nobody could manage keys afterwards
        r = c.delete(f"/v1/keys/{root['id']}", headers=me)
        assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin_key"
        assert r.json()["error"]["param"] == "key_id" and "pictale keys revoke" in r.json()["error"]["message"]
        assert c.get("/v1/avatars", headers=me).status_code == 200
        # with a second admin it can; a non-admin cannot revoke anything
        other = c.post("/v1/keys", json={"name": "root2", "admin": True}, headers=me).json()
        assert c.delete(f"/v1/keys/{other['id']}", headers=bearer(bob["key"])).status_code == 403
        assert c.delete(f"/v1/keys/{other['id']}", headers=me).json() == {"id": other["id"], "deleted": True}
        assert c.delete(f"/v1/keys/{bob['id']}", headers=me).status_code == 200
        assert c.get("/v1/avatars").status_code == 401
        # the CLI on the server revokes the last key: the server is open again, with that key's things
        revoked = lifecycle.revoke_key(c.app.state.db, root["id"], keep_an_admin=False)
        moved = {"avatars": 1, "characters": 1, "books": 1, "trainings": 0}
        assert revoked.reopened and revoked.returned.moved == moved
        assert c.app.state.auth.open_mode and c.app.state.auth.describe().startswith("open")
        assert c.get("/v1/avatars", headers=me).status_code == 200  # any header is accepted again
        assert [a["name"] for a in c.get("/v1/avatars").json()["data"]] == ["lucy"]
        assert [ch["name"] for ch in c.get("/v1/characters").json()["data"]] == ["sasha"]


def test_names_taken_by_the_new_owner_stay_where_they_were(tmp_path):
    from pictale.accounts.ownership import transfer
    from pictale.avatars.characters import CharacterStore
    from pictale.storage.db import Database

    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    chars = CharacterStore(db)
    chars.create("local", "Sasha", description="local")
    chars.create("local", "tom", description="local")
    chars.create("key_x", "sasha", description="key")
    with db.session() as s:
        moved = transfer(s, "local", "key_x")
    assert moved.moved == {"avatars": 0, "characters": 1, "books": 0, "trainings": 0}
    assert moved.kept == ["character Sasha"]
    assert [c.name for c in chars.list("local")] == ["Sasha"]
    assert sorted(c.name for c in chars.list("key_x")) == ["sasha", "tom"]
    db.dispose()


def test_with_api_auth_the_first_key_may_be_an_ordinary_one(tmp_path, tiny_models):
    from tests.api.test_keys_api import basic

    with make_app(tmp_path, tiny_models, api_auth="alice:pw") as c:
        r = c.post("/v1/keys", json={"name": "bot"}, headers=basic("alice", "pw"))
        assert r.status_code == 201 and r.json()["admin"] is False and r.json()["adopted"] is None
