"""Rows of one owner holding a request and a document as JSON (books, trainings), and their store.

A row is written when the work is accepted and saved as it goes, each save one transaction, so a crash keeps the
last saved state; rows left "queued" or "running" are resumed at start-up.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from sqlalchemy import select

from pictale.storage.db import Database

ACTIVE_STATES = ("queued", "running")


class DocumentStore:
    """Create, read and save rows of `row_cls` (id, owner_id, a label column, state, request, document, error,
    created_at, updated_at); `label` names the label column (a book's `title`, a training's `name`)."""

    row_cls: ClassVar[Any]
    label: ClassVar[str]

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, row_id: str, owner: str, label: str, request: dict, document: dict) -> dict:
        now = int(time.time())
        row = self.row_cls(
            id=row_id, owner_id=owner, state="queued", request=request, document=document, created_at=now,
            updated_at=now, **{self.label: label},
        )  # fmt: skip
        with self.db.session() as s:
            s.add(row)
        return self._as_dict(row)

    def get(self, row_id: str, owner: str | None = None) -> dict | None:
        """The row, or None when it does not exist or belongs to another owner."""
        with self.db.session() as s:
            row = s.get(self.row_cls, row_id)
            if row is None or (owner is not None and row.owner_id != owner):
                return None
            return self._as_dict(row)

    def list(self, owner: str) -> list[dict]:
        cls = self.row_cls
        with self.db.session() as s:
            return [
                self._as_dict(r) for r in s.scalars(select(cls).where(cls.owner_id == owner).order_by(cls.created_at))
            ]

    def active(self, owner: str | None = None) -> list[dict]:
        """Rows not finished (queued or running), oldest first: a stopped server resumes them at start-up."""
        cls = self.row_cls
        query = select(cls).where(cls.state.in_(ACTIVE_STATES))
        if owner is not None:
            query = query.where(cls.owner_id == owner)
        with self.db.session() as s:
            return [self._as_dict(r) for r in s.scalars(query.order_by(cls.created_at))]

    def save(self, row_id: str, *, document: dict | None = None, state: str | None = None, **fields: Any) -> None:
        with self.db.session() as s:
            row = s.get(self.row_cls, row_id)
            if row is None:
                return
            if document is not None:
                row.document = dict(document)  # a new object: the JSON column sees the change
            if state is not None:
                row.state = state
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = int(time.time())

    def delete(self, row_id: str) -> bool:
        with self.db.session() as s:
            row = s.get(self.row_cls, row_id)
            if row is None:
                return False
            s.delete(row)
            return True

    def _all(self) -> list[dict]:
        with self.db.session() as s:
            return [self._as_dict(r) for r in s.scalars(select(self.row_cls))]

    def _as_dict(self, row: Any) -> dict:
        return {
            "id": row.id,
            "owner": row.owner_id,
            self.label: getattr(row, self.label),
            "state": row.state,
            "request": row.request,
            "document": row.document,
            "error": row.error,
            "created": row.created_at,
            "updated": row.updated_at,
        }
