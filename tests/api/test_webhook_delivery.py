"""Webhooks on a shared server: refused targets, HMAC-signed deliveries, and deliveries kept across a restart.

The receiver listens on 127.0.0.1 only (the servers here allow loopback targets, as the setting says)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest

from pictale.service.webhooks.sender import WebhookSender
from pictale.storage.webhooks import DeliveryStore
from tests.api.test_keys_api import bearer, make_app
from tests.webhook_receiver import Receiver

FAST = {"prompt": "a photo of a cat", "steps": 2, "width": 64, "height": 64, "seed": 7}


@pytest.fixture
def receiver():
    r = Receiver((204,))
    yield r
    r.close()


def verify(secret: str, call: dict) -> bool:
    """What a receiver does: HMAC-SHA256 over "<timestamp>." + the exact body, compared in constant time."""
    headers = call["headers"]
    signed = headers["x-pictale-timestamp"].encode() + b"." + call["raw"]
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-pictale-signature"])


def wait_until(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_private_targets_are_refused_at_submission(tmp_path, tiny_models):
    with make_app(tmp_path, tiny_models) as c:
        for url, why in [
            ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
            ("http://[fd12::1]/x", "fd12::1 is a private address"),
        ]:
            r = c.post("/v1/jobs", json={**FAST, "callback_url": url})
            assert r.status_code == 422, url
            error = r.json()["error"]
            assert error["param"] == "callback_url" and error["code"] == "callback_url_refused"
            assert why in error["message"] and "PICTALE_CALLBACK_ALLOW_PRIVATE" in error["message"]
        assert c.get("/v1/jobs").json()["data"] == []  # nothing was queued
        assert DeliveryStore(c.app.state.db).pending() == []


def test_deliveries_are_signed_with_the_owners_secret(tmp_path, tiny_models, receiver):
    with make_app(tmp_path, tiny_models, callback_allow_private=True) as c:
        # open mode: the local user's secret, replaced over HTTP (shown once)
        r = c.post("/v1/webhook-secret")
        assert r.status_code == 201 and r.json()["owner"] == "local"
        local_secret = r.json()["webhook_secret"]
        job = c.post("/v1/jobs", json={**FAST, "callback_url": receiver.url}).json()
        call = receiver.wait(1)[0]
        assert json.loads(call["raw"])["id"] == job["id"] and json.loads(call["raw"])["state"] == "done"
        assert call["headers"]["x-pictale-job"] == job["id"]
        assert call["headers"]["x-pictale-delivery"].startswith("dlv_")
        assert abs(int(call["headers"]["x-pictale-timestamp"]) - time.time()) < 60
        assert verify(local_secret, call)
        assert not verify(local_secret + "x", call)
        assert not verify(local_secret, call | {"raw": call["raw"] + b" "})  # the exact bytes are signed
        # a key signs with the secret it was given when it was made
        key = c.post("/v1/keys", json={"name": "root", "admin": True}).json()
        job = c.post("/v1/jobs", json={**FAST, "callback_url": receiver.url}, headers=bearer(key["key"])).json()
        call = receiver.wait(2)[1]
        assert json.loads(call["raw"])["id"] == job["id"]
        assert verify(key["webhook_secret"], call) and not verify(local_secret, call)
        wait_until(lambda: DeliveryStore(c.app.state.db).pending() == [])


class StuckSender(WebhookSender):
    """A delivery that never finishes: the server is killed while it is under way."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Event()

    def deliver(self, url, payload, *, job_id="", headers=None):
        self.started.set()
        self.release.wait(30)
        return False


def test_a_delivery_under_way_is_sent_again_after_a_restart(tmp_path, tiny_models, receiver):
    stuck = StuckSender()
    try:
        with make_app(tmp_path, tiny_models, callback_allow_private=True) as c:
            c.app.state.webhooks = stuck
            secret = c.post("/v1/webhook-secret").json()["webhook_secret"]
            job = c.post("/v1/jobs", json={**FAST, "callback_url": receiver.url}).json()
            assert stuck.started.wait(30)
            (pending,) = DeliveryStore(c.app.state.db).pending()
            assert pending.final and pending.job_id == job["id"]
        assert receiver.calls == []
        with make_app(tmp_path, tiny_models, callback_allow_private=True) as c:
            call = receiver.wait(1)[0]
            body = json.loads(call["raw"])
            assert body["id"] == job["id"] and body["state"] == "done" and body["result"]["images"]
            assert call["headers"]["x-pictale-delivery"] == pending.id  # the same delivery: receivers dedupe
            assert verify(secret, call)
            wait_until(lambda: DeliveryStore(c.app.state.db).pending() == [])
    finally:
        stuck.release.set()


def test_a_job_the_server_never_finished_is_reported_after_a_restart(tmp_path, tiny_models, receiver):
    with make_app(tmp_path, tiny_models, callback_allow_private=True) as c:
        accepted = {"id": "job-lost", "object": "job", "state": "queued", "session": "s1", "result": None}
        # as if killed (kill -9) after accepting the job: the row is there, the job is gone
        delivery_id = DeliveryStore(c.app.state.db).add("job-lost", "local", receiver.url, json.dumps(accepted))
    with make_app(tmp_path, tiny_models, callback_allow_private=True) as c:
        call = receiver.wait(1)[0]
        body = json.loads(call["raw"])
        assert body["id"] == "job-lost" and body["state"] == "cancelled" and body["session"] == "s1"
        assert body["error"]["code"] == "server_stopped" and body["result"] is None
        assert call["headers"]["x-pictale-delivery"] == delivery_id
        wait_until(lambda: DeliveryStore(c.app.state.db).pending() == [])
    time.sleep(0.3)
    assert len(receiver.calls) == 1  # once delivered, never again


def test_a_refused_target_is_not_sent_after_a_restart(tmp_path, tiny_models, receiver):
    """A delivery accepted while private targets were allowed is dropped once they are not."""
    with make_app(tmp_path, tiny_models, callback_allow_private=True) as c:
        DeliveryStore(c.app.state.db).add("job-x", "local", receiver.url, json.dumps({"id": "job-x"}))
    with make_app(tmp_path, tiny_models) as c:
        wait_until(lambda: DeliveryStore(c.app.state.db).pending() == [])
    time.sleep(0.3)
    assert receiver.calls == []
