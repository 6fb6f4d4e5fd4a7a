"""Picture books: one row per book, its request and its progress as JSON documents, images in a blob store.

A book is written after every finished page candidate, so a server that stops mid-book resumes where it was:
the document says which pages have their prompts, candidates, scores and chosen image.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from pictale.storage.db import Database
from pictale.storage.tables import Base

ACTIVE_STATES = ("queued", "running")


class BookRow(Base):
    """A book of one owner; `document` holds the story, pages, candidates and choices."""

    __tablename__ = "books"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class BookStore:
    """Create, read and save books; each save is one transaction (a crash keeps the last saved state)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, book_id: str, owner: str, title: str, request: dict, document: dict) -> dict:
        now = int(time.time())
        row = BookRow(
            id=book_id,
            owner_id=owner,
            title=title,
            state="queued",
            request=request,
            document=document,
            created_at=now,
            updated_at=now,
        )
        with self.db.session() as s:
            s.add(row)
        return _as_dict(row)

    def get(self, book_id: str, owner: str | None = None) -> dict | None:
        """The book, or None when it does not exist or belongs to another owner."""
        with self.db.session() as s:
            row = s.get(BookRow, book_id)
            if row is None or (owner is not None and row.owner_id != owner):
                return None
            return _as_dict(row)

    def list(self, owner: str) -> list[dict]:
        with self.db.session() as s:
            rows = s.scalars(select(BookRow).where(BookRow.owner_id == owner).order_by(BookRow.created_at))
            return [_as_dict(r) for r in rows]

    def active(self) -> list[dict]:
        """Books a stopped server left unfinished: they resume at start-up."""
        with self.db.session() as s:
            rows = s.scalars(select(BookRow).where(BookRow.state.in_(ACTIVE_STATES)).order_by(BookRow.created_at))
            return [_as_dict(r) for r in rows]

    def save(self, book_id: str, *, document: dict | None = None, state: str | None = None, **fields: Any) -> None:
        with self.db.session() as s:
            row = s.get(BookRow, book_id)
            if row is None:
                return
            if document is not None:
                row.document = document
            if state is not None:
                row.state = state
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = int(time.time())

    def delete(self, book_id: str) -> bool:
        with self.db.session() as s:
            row = s.get(BookRow, book_id)
            if row is None:
                return False
            s.delete(row)
            return True

    def digests(self) -> set[str]:
        """Every image digest any book refers to (for blob garbage collection)."""
        out: set[str] = set()
        for book in self._all():
            for page in book["document"].get("pages", []):
                out.update(c["digest"] for c in page.get("candidates", []) if c.get("digest"))
                ref = page.get("reference")
                if isinstance(ref, dict) and ref.get("source") == "page":  # a character reference, kept with it
                    out.add(ref["digest"])
        return out

    def _all(self) -> list[dict]:
        with self.db.session() as s:
            return [_as_dict(r) for r in s.scalars(select(BookRow))]


def _as_dict(row: BookRow) -> dict:
    return {
        "id": row.id,
        "owner": row.owner_id,
        "title": row.title,
        "state": row.state,
        "request": row.request,
        "document": row.document,
        "error": row.error,
        "created": row.created_at,
        "updated": row.updated_at,
    }
