"""`pictale keys revoke` (and `rm`), what the CLI says about open mode, and webhook secrets."""

from __future__ import annotations

from typer.testing import CliRunner

from pictale.accounts.keys import KeyStore
from pictale.cli.main import app
from pictale.storage.db import Database
from pictale.storage.webhooks import SecretStore

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


def said(result) -> str:
    return " ".join(result.stderr.split())


def test_create_shows_the_webhook_secret_once_and_revoke_reopens(tmp_path):
    data = ["--data-dir", tmp_path]
    assert run("characters", "add", "sasha", *data).exit_code == 0
    r = run("keys", "create", "root", "--admin", *data)
    assert r.exit_code == 0
    key = r.stdout.strip()
    assert key.startswith("pt-") and "\n" not in key  # stdout is the key alone, for scripts
    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    root = KeyStore(db).verify(key)
    secret = SecretStore(db).get(root.id)
    assert secret.startswith("whsec_") and f"its webhook signing secret (also shown only now): {secret}" in said(r)
    assert "this key owns what was made in open mode (0 avatars, 1 character, 0 books, 0 trainings)" in said(r)
    bob = run("keys", "create", "bob", *data)
    assert bob.exit_code == 0 and "open mode" not in said(bob)
    bob_id = KeyStore(db).verify(bob.stdout.strip()).id
    r = run("keys", "revoke", bob_id, *data)
    assert r.exit_code == 0 and said(r) == f"revoked {bob_id}"
    r = run("keys", "revoke", root.id, *data)
    assert r.exit_code == 0
    assert "that was the last key: no live keys: the server is open (local single user" in said(r)
    assert "its things now belong to the local user (0 avatars, 1 character, 0 books, 0 trainings)" in said(r)
    assert not KeyStore(db).has_keys()
    assert "sasha" in run("characters", "list", *data).stdout
    assert "the server is open" in said(run("keys", "list", *data))
    r = run("keys", "revoke", root.id, *data)
    assert r.exit_code == 2 and f"no API key with id '{root.id}'" in said(r)
    db.dispose()


def test_rm_is_an_alias_and_api_auth_is_named(tmp_path):
    data = ["--data-dir", tmp_path]
    key = run("keys", "create", "root", "--admin", *data).stdout.strip()
    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    key_id = KeyStore(db).verify(key).id
    r = run("keys", "rm", key_id, *data, env={"PICTALE_API_AUTH": "alice:pw"})
    assert r.exit_code == 0
    assert "no live keys: only the --api-auth (PICTALE_API_AUTH) Basic users can use the server" in said(r)
    assert "anyone who can reach" not in said(r)
    db.dispose()


def test_webhook_secret_of_the_local_user_and_rotation(tmp_path):
    data = ["--data-dir", tmp_path]
    first = run("keys", "webhook-secret", *data)
    assert first.exit_code == 0 and first.stdout.strip().startswith("whsec_")
    assert run("keys", "webhook-secret", *data).stdout == first.stdout  # stable until rotated
    rotated = run("keys", "webhook-secret", "--rotate", *data).stdout
    assert rotated.strip().startswith("whsec_") and rotated != first.stdout
    key = run("keys", "create", "root", "--admin", *data).stdout.strip()
    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    key_id = KeyStore(db).verify(key).id
    r = run("keys", "webhook-secret", key_id, *data)
    assert r.exit_code == 2 and "was shown when it was made; use --rotate" in said(r)
    new = run("keys", "webhook-secret", key_id, "--rotate", *data).stdout.strip()
    assert SecretStore(db).get(key_id) == new
    r = run("keys", "webhook-secret", "key_nope", "--rotate", *data)
    assert r.exit_code == 2 and "no API key with id 'key_nope'" in said(r)
    db.dispose()
