"""Webhook state that must outlive a restart: each owner's signing secret, and deliveries not yet made.

A delivery row is written when a job with a `callback_url` is accepted (its body: the job as accepted) and
replaced by the final job object when the job ends; it is deleted once the receiver has answered. Rows left
at start-up are sent again (at least once), so a receiver must accept a delivery id it has already seen.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from pictale.storage.db import Database
from pictale.storage.tables import Base


class WebhookSecretRow(Base):
    """The secret that signs an owner's webhook deliveries (kept in clear: the server signs with it)."""

    __tablename__ = "webhook_secrets"

    owner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)


class WebhookDeliveryRow(Base):
    """A delivery not yet made: the job as accepted (`final` False) or its final object (`final` True)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True)
class Delivery:
    id: str
    job_id: str
    owner: str
    url: str
    body: str
    final: bool


class DeliveryStore:
    """The outbox table: add when a job is accepted, finish when it ends, delete once delivered."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, job_id: str, owner: str, url: str, body: str) -> str:
        delivery_id = "dlv_" + secrets.token_hex(8)
        row = WebhookDeliveryRow(
            id=delivery_id, job_id=job_id, owner_id=owner, url=url, body=body, final=False, created_at=int(time.time())
        )
        with self.db.session() as s:
            s.add(row)
        return delivery_id

    def finish(self, delivery_id: str, body: str) -> None:
        """The job ended: `body` is what is sent from now on, also after a restart."""
        with self.db.session() as s:
            row = s.get(WebhookDeliveryRow, delivery_id)
            if row is not None:
                row.body, row.final = body, True

    def attempted(self, delivery_id: str) -> None:
        with self.db.session() as s:
            row = s.get(WebhookDeliveryRow, delivery_id)
            if row is not None:
                row.attempts += 1

    def delete(self, delivery_id: str) -> None:
        with self.db.session() as s:
            row = s.get(WebhookDeliveryRow, delivery_id)
            if row is not None:
                s.delete(row)

    def pending(self) -> list[Delivery]:
        """Every delivery not yet made, oldest first."""
        with self.db.session() as s:
            rows = s.scalars(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.created_at, WebhookDeliveryRow.id))
            return [Delivery(r.id, r.job_id, r.owner_id, r.url, r.body, r.final) for r in rows]


class SecretStore:
    """Per-owner webhook signing secrets: an API key gets one with the key; others get one on first use."""

    PREFIX = "whsec_"

    def __init__(self, db: Database) -> None:
        self.db = db

    def rotate(self, owner: str) -> str:
        """A new secret for `owner` (replacing any old one); returns it."""
        value = self.PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            row = s.get(WebhookSecretRow, owner)
            if row is None:
                s.add(WebhookSecretRow(owner_id=owner, secret=value, created_at=int(time.time())))
            else:
                row.secret, row.created_at = value, int(time.time())
        return value

    def get(self, owner: str) -> str | None:
        with self.db.session() as s:
            row = s.get(WebhookSecretRow, owner)
            return row.secret if row is not None else None

    def get_or_create(self, owner: str) -> str:
        return self.get(owner) or self.rotate(owner)
