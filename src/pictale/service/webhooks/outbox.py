"""Webhook deliveries that survive a restart, signed with the owner's secret (HMAC-SHA256).

When a job with a `callback_url` is accepted, a delivery row is written (the job as accepted). When the job
ends, the row gets the final job object and is sent; it is deleted once the receiver has answered (or the
retries are spent). At start-up every row left is sent again: a final object as it was, and a job that never
ended (the server stopped first) as "cancelled" with the reason. At least once: receivers dedupe on
`X-Pictale-Delivery`.

Signature: `X-Pictale-Signature: sha256=HEX`, HEX = HMAC-SHA256(secret, f"{X-Pictale-Timestamp}." + body),
over the exact body bytes sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pictale.core.config import Settings
from pictale.core.errors import CallbackRefused
from pictale.jobs.queue import Job
from pictale.service.webhooks.sender import WebhookSender
from pictale.service.webhooks.urls import check_callback_url
from pictale.storage.db import Database
from pictale.storage.webhooks import Delivery, DeliveryStore, SecretStore

log = logging.getLogger(__name__)

STOPPED = "the server stopped before the job finished; submit it again"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Pictale-Signature` value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


class WebhookOutbox:
    def __init__(self, db: Database, settings: Settings, sender: Callable[[], WebhookSender]) -> None:
        self.deliveries = DeliveryStore(db)
        self.secrets = SecretStore(db)
        self.allow_private = settings.callback_allow_private
        self._sender = sender

    def check(self, url: str) -> None:
        """At submission: a 422 naming `callback_url` unless the server may call it."""
        check_callback_url(url, allow_private=self.allow_private)

    def watch(self, job: Job, owner: str, url: str, accepted: dict[str, Any], final: Callable[[], dict]) -> str:
        """Persist the delivery now; send `final()` when the job ends. Returns the delivery id."""
        delivery_id = self.deliveries.add(job.id, owner, url, _dumps(accepted))
        job.future.add_done_callback(lambda _: self._spawn(self._finish, delivery_id, job.id, owner, url, final))
        return delivery_id

    def resend_pending(self) -> list[threading.Thread]:
        """At start-up: send every delivery a stopped server left (jobs that never ended as cancelled)."""
        threads = []
        for delivery in self.deliveries.pending():
            if not delivery.final:
                body = _dumps(_stopped(json.loads(delivery.body)))
                self.deliveries.finish(delivery.id, body)
                delivery = Delivery(delivery.id, delivery.job_id, delivery.owner, delivery.url, body, True)
            threads.append(self._spawn(self.send, delivery))
        if threads:
            log.info("re-sending %d webhook deliveries left by the last run", len(threads))
        return threads

    def send(self, delivery: Delivery) -> bool:
        """Sign and POST one delivery (with the sender's retries); the row goes once it is answered."""
        try:
            check_callback_url(delivery.url, allow_private=self.allow_private)
        except CallbackRefused as exc:
            log.warning("webhook %s for job %s not sent: %s", delivery.id, delivery.job_id, exc.message)
            self.deliveries.delete(delivery.id)
            return False
        body = delivery.body.encode("utf-8")
        timestamp = int(time.time())
        headers = {
            "X-Pictale-Delivery": delivery.id,
            "X-Pictale-Timestamp": str(timestamp),
            "X-Pictale-Signature": signature(self.secrets.get_or_create(delivery.owner), timestamp, body),
        }
        self.deliveries.attempted(delivery.id)
        ok = self._sender().deliver(delivery.url, body, job_id=delivery.job_id, headers=headers)
        self.deliveries.delete(delivery.id)  # answered, or retries spent: either way it is not sent again
        return ok

    def _finish(self, delivery_id: str, job_id: str, owner: str, url: str, final: Callable[[], dict]) -> bool:
        try:
            body = _dumps(final())
        except Exception:
            log.exception("webhook for job %s: could not build the payload", job_id)
            self.deliveries.delete(delivery_id)
            return False
        self.deliveries.finish(delivery_id, body)
        return self.send(Delivery(delivery_id, job_id, owner, url, body, True))

    @staticmethod
    def _spawn(target: Callable[..., Any], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except Exception:  # a webhook must never take anything down
                log.exception("webhook delivery failed")

        thread = threading.Thread(target=run, name="pictale-webhook", daemon=True)
        thread.start()
        return thread


def _stopped(accepted: dict[str, Any]) -> dict[str, Any]:
    """The job object of a job the server stopped before it ended (from the job as accepted)."""
    return accepted | {
        "state": "cancelled",
        "finished": time.time(),
        "eta": 0.0,
        "result": None,
        "error": {"message": STOPPED, "type": "server_error", "code": "server_stopped", "param": None},
    }
