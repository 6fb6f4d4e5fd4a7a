"""Webhooks: the app's signed, persistent outbox (re-sending what a stopped server left, at start-up), and
`POST /v1/webhook-secret`, which gives the caller a new signing secret (shown once)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from pictale.api.auth import require_auth
from pictale.core.types import Principal
from pictale.service.webhooks.outbox import WebhookOutbox
from pictale.service.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)


def outbox_of(app: FastAPI) -> WebhookOutbox:
    """The app's outbox, made on first use; it sends through `app.state.webhooks` (tests swap that sender)."""
    box = getattr(app.state, "outbox", None)
    if box is None:
        box = WebhookOutbox(app.state.db, app.state.settings, lambda: sender_of(app))
        app.state.outbox = box
    return box


def sender_of(app: FastAPI) -> WebhookSender:
    sender = getattr(app.state, "webhooks", None)
    if sender is None:
        settings = app.state.settings
        sender = WebhookSender(settings.callback_timeout, settings.callback_retries)
        app.state.webhooks = sender
    return sender


@asynccontextmanager
async def lifespan(app: FastAPI):
    await run_in_threadpool(outbox_of(app).resend_pending)
    yield


router = APIRouter(prefix="/v1", tags=["webhooks"], lifespan=lifespan)
Caller = Annotated[Principal, Depends(require_auth)]


def outbox(request: Request) -> WebhookOutbox:
    return outbox_of(request.app)


@router.post("/webhook-secret", status_code=201)
def rotate_webhook_secret(request: Request, caller: Caller) -> dict:
    """A new secret for the caller's deliveries from now on; the old one stops signing at once."""
    secret = outbox(request).secrets.rotate(caller.id)
    return {"object": "webhook_secret", "owner": caller.id, "webhook_secret": secret}
