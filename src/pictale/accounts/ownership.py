"""Hand everything one owner made (avatars, characters, books, trainings) to another owner, in one transaction.

Used when the first API key is created (it adopts what the open-mode local user made) and when the last key
is revoked (the local user of the reopened server gets that key's things back). A thing whose name the new
owner already uses stays where it was and is counted as kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from pictale.storage.books import BookRow
from pictale.storage.tables import Avatar, CharacterRow
from pictale.storage.trainings import TrainingRow


@dataclass
class Transfer:
    """What moved, per kind of thing, and what stayed because its name was taken."""

    moved: dict[str, int] = field(default_factory=lambda: {"avatars": 0, "characters": 0, "books": 0, "trainings": 0})
    kept: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.moved.values())

    def describe(self) -> str:
        """ "2 avatars, 1 character, 0 books" (for CLI output and logs)."""
        parts = []
        for kind, n in self.moved.items():
            parts.append(f"{n} {kind if n != 1 else kind[:-1]}")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return dict(self.moved) | {"kept": list(self.kept)}


def transfer(session: Session, source: str, target: str) -> Transfer:
    """Move `source`'s things to `target` inside `session` (the caller's transaction)."""
    out = Transfer()
    if source == target:
        return out
    taken = {(a.kind, a.name) for a in session.scalars(select(Avatar).where(Avatar.owner_id == target))}
    tokens = {
        (a.kind, a.token)
        for a in session.scalars(select(Avatar).where(Avatar.owner_id == target))
        if a.token is not None
    }
    for avatar in session.scalars(select(Avatar).where(Avatar.owner_id == source)).all():
        if (avatar.kind, avatar.name) in taken or (avatar.token and (avatar.kind, avatar.token) in tokens):
            out.kept.append(f"avatar {avatar.kind}/{avatar.name}")
            continue
        avatar.owner_id = target
        out.moved["avatars"] += 1
    names = set(session.scalars(select(CharacterRow.name_key).where(CharacterRow.owner_id == target)))
    for character in session.scalars(select(CharacterRow).where(CharacterRow.owner_id == source)).all():
        if character.name_key in names:
            out.kept.append(f"character {character.name}")
            continue
        character.owner_id = target
        out.moved["characters"] += 1
    for book in session.scalars(select(BookRow).where(BookRow.owner_id == source)).all():
        book.owner_id = target
        out.moved["books"] += 1
    for training in session.scalars(select(TrainingRow).where(TrainingRow.owner_id == source)).all():
        training.owner_id = target  # its avatar, once registered, is an avatar like the others
        out.moved["trainings"] += 1
    return out
