"""Picture books: one row per book, its request and its progress as JSON documents, images in a blob store.

A book is written after every finished page candidate, so a server that stops mid-book resumes where it was:
the document says which pages have their prompts, candidates, scores and chosen image.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pictale.storage.documents import DocumentStore
from pictale.storage.tables import Base


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


class BookStore(DocumentStore):
    """Create, read and save books; each save is one transaction (a crash keeps the last saved state)."""

    row_cls = BookRow
    label = "title"

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
