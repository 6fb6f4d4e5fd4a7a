"""Job webhooks: POST the final job object to the client's `callback_url`, once, off the worker thread.

Retries (tenacity): exponential backoff on connection errors, timeouts, 429 and 5xx answers, at most
`retries` more attempts; other 4xx answers are final. Nothing here ever raises into the caller: a failed
delivery is logged and dropped.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from pictale import __version__

log = logging.getLogger(__name__)

Payload = bytes | dict[str, Any] | Callable[[], dict[str, Any]]


class RetryableStatus(Exception):
    """The receiver answered 429 or 5xx: worth another try."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class WebhookSender:
    def __init__(
        self,
        timeout: float = 10.0,
        retries: int = 3,
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.transport = transport

    def send(self, url: str, payload: Payload, *, job_id: str = "") -> threading.Thread:
        """Deliver in a daemon thread (the payload may be a callable, built there); returns the thread."""
        thread = threading.Thread(
            target=self.deliver, args=(url, payload), kwargs={"job_id": job_id}, name="pictale-webhook", daemon=True
        )
        thread.start()
        return thread

    def deliver(self, url: str, payload: Payload, *, job_id: str = "", headers: dict[str, str] | None = None) -> bool:
        """POST `payload` (JSON bytes, or an object made JSON here) with retries; True when the receiver
        answered 2xx/3xx. `headers` are added (e.g. the signature). Never raises."""
        try:
            if isinstance(payload, bytes):
                body = payload
            else:
                body = json.dumps(payload() if callable(payload) else payload, ensure_ascii=False).encode("utf-8")
        except Exception:
            log.exception("webhook for job %s: could not build the payload", job_id)
            return False
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"pictale/{__version__}",
            "X-Pictale-Job": job_id,
        } | (headers or {})
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=retry_if_exception_type((httpx.TransportError, RetryableStatus)),
            before_sleep=lambda state: log.info(
                "webhook for job %s: attempt %d failed (%s), retrying",
                job_id,
                state.attempt_number,
                state.outcome.exception() if state.outcome else "?",
            ),
        )
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport, follow_redirects=False) as client:
                for attempt in retrying:
                    with attempt:
                        response = client.post(url, content=body, headers=headers)
                        if response.status_code == 429 or response.status_code >= 500:
                            raise RetryableStatus(response.status_code)
            if response.status_code >= 400:
                log.warning("webhook for job %s: %s answered %d; not retried", job_id, url, response.status_code)
                return False
            return True
        except RetryError as exc:
            log.warning("webhook for job %s: gave up after %d attempts: %s", job_id, self.retries + 1, exc)
        except Exception as exc:  # a webhook must never take anything down
            log.warning("webhook for job %s to %s failed: %s: %s", job_id, url, type(exc).__name__, exc)
        return False
