"""LoRA trainings: one row per training, its request and its progress as JSON documents.

The row is written when the training is accepted, at every stage change and after every chunk of steps, so a
server that stops mid-training knows where it was (the trainer's own state, the resume point, lives in the
training's work dir). Rows left "queued" or "running" are resumed at start-up.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from pictale.storage.db import Database
from pictale.storage.tables import Base

ACTIVE_STATES = ("queued", "running")


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


class TrainingStore:
    """Create, read and save trainings; each save is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, training_id: str, owner: str, name: str, request: dict, document: dict) -> dict:
        now = int(time.time())
        row = TrainingRow(
            id=training_id,
            owner_id=owner,
            name=name,
            state="queued",
            request=request,
            document=document,
            created_at=now,
            updated_at=now,
        )
        with self.db.session() as s:
            s.add(row)
        return _as_dict(row)

    def get(self, training_id: str, owner: str | None = None) -> dict | None:
        """The training, or None when it does not exist or belongs to another owner."""
        with self.db.session() as s:
            row = s.get(TrainingRow, training_id)
            if row is None or (owner is not None and row.owner_id != owner):
                return None
            return _as_dict(row)

    def list(self, owner: str) -> list[dict]:
        with self.db.session() as s:
            rows = s.scalars(select(TrainingRow).where(TrainingRow.owner_id == owner).order_by(TrainingRow.created_at))
            return [_as_dict(r) for r in rows]

    def active(self, owner: str | None = None) -> list[dict]:
        """Trainings not finished (queued or running): a stopped server resumes them at start-up."""
        query = select(TrainingRow).where(TrainingRow.state.in_(ACTIVE_STATES))
        if owner is not None:
            query = query.where(TrainingRow.owner_id == owner)
        with self.db.session() as s:
            return [_as_dict(r) for r in s.scalars(query.order_by(TrainingRow.created_at))]

    def save(self, training_id: str, *, document: dict | None = None, state: str | None = None, **fields: Any) -> None:
        with self.db.session() as s:
            row = s.get(TrainingRow, training_id)
            if row is None:
                return
            if document is not None:
                row.document = dict(document)  # a new object: the JSON column sees the change
            if state is not None:
                row.state = state
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = int(time.time())


def _as_dict(row: TrainingRow) -> dict:
    return {
        "id": row.id,
        "owner": row.owner_id,
        "name": row.name,
        "state": row.state,
        "request": row.request,
        "document": row.document,
        "error": row.error,
        "created": row.created_at,
        "updated": row.updated_at,
    }
