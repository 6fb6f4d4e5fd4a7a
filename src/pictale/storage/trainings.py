"""LoRA trainings: one row per training, its request and its progress as JSON documents.

The row is written when the training is accepted, at every stage change and after every chunk of steps, so a
server that stops mid-training knows where it was (the trainer's own state, the resume point, lives in the
training's work dir). Rows left "queued" or "running" are resumed at start-up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pictale.storage.documents import DocumentStore
from pictale.storage.tables import Base


class TrainingRow(Base):
    """A training of one owner; `request` is what was asked, `document` what has happened since."""

    __tablename__ = "trainings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class TrainingStore(DocumentStore):
    """Create, read and save trainings; each save is one transaction."""

    row_cls = TrainingRow
    label = "name"
