"""Story characters per owner: create, list, show, update, delete; what `<be-char:name>` expands to.

An owner never sees another owner's characters: every query is filtered by owner, and a miss is a plain 404.
Names are unique per owner case-insensitively; the name keeps the case it was written in for listings.
The `avatars` field is checked for syntax only (avatar tokens and nothing else): the avatars it names are
resolved at generation time, so deleting an avatar later gives the usual "unknown avatar" 422 there.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pictale.core.errors import AvatarExists, CharacterNotFound, InvalidRequest
from pictale.core.limits import SEED_MAX
from pictale.core.limits import check_seed as check_seed_value
from pictale.core.types import Character
from pictale.prompt.characters import has_characters
from pictale.prompt.grammar import join_errors, scan, splice
from pictale.storage.db import Database
from pictale.storage.tables import CharacterRow

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SEED_POLICIES = ("random", "fixed")
LIMITS = {"description": 4000, "avatars": 1000, "negative_prompt": 2000}
"""Characters per text field: a description is long (T5-family models read 256+ tokens), the rest short."""
_UNSET: Any = object()


@dataclass(frozen=True)
class CharacterInfo:
    """One character as the REST API and the CLI show it."""

    character: Character
    created: int
    updated: int

    @property
    def name(self) -> str:
        return self.character.name

    def to_json(self) -> dict:
        c = self.character
        return {
            "object": "character",
            "name": c.name,
            "description": c.description,
            "avatars": c.avatars,
            "negative_prompt": c.negative_prompt,
            "seed_policy": c.seed_policy,
            "seed": c.seed,
            "created": self.created,
            "updated": self.updated,
        }


def _character(row: CharacterRow) -> Character:
    return Character(
        name=row.name,
        description=row.description,
        avatars=row.avatars,
        negative_prompt=row.negative_prompt,
        seed_policy=row.seed_policy,
        seed=row.seed,
    )


def _info(row: CharacterRow) -> CharacterInfo:
    return CharacterInfo(_character(row), row.created_at, row.updated_at)


def check_name(name: Any, param: str = "name") -> str:
    """1-64 characters from letters, digits, `_`, `.` and `-` (what `<be-char:NAME>` can spell)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidRequest(
            f"character name {name!r} is not allowed: use 1-64 characters from letters, digits, '_', '.' and '-'",
            param=param,
        )
    return name


def check_text(value: Any, field: str) -> str:
    """A text field: a string (None counts as empty) within its limit, calling no other character."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be text", param=field)
    value = value.strip()
    if len(value) > LIMITS[field]:
        raise InvalidRequest(
            f"{field} is {len(value)} characters long; the limit is {LIMITS[field]}",
            param=field,
        )
    if has_characters(value):
        raise InvalidRequest(f"{field} cannot call a character (<be-char:...>): characters do not nest", param=field)
    return value


def check_avatars(value: Any) -> str:
    """Only avatar tokens (`<be-face:lucy:0.4>`, `<lora:toy:0.8>`), separated by spaces or commas."""
    value = check_text(value, "avatars")
    tokens, errors = scan(value)
    if errors:
        raise InvalidRequest(f"avatars: {join_errors(errors)}", param="avatars")
    others = [t.text for t in tokens if t.kind is None]
    if others:
        raise InvalidRequest(f"avatars: '{others[0]}' is not an avatar token", param="avatars")
    rest = splice(value, [(t, "") for t in tokens]).strip(" \t\r\n,")
    if rest:
        raise InvalidRequest(
            f"avatars may only contain avatar tokens such as <be-face:lucy:0.4> <be-lora:toy:0.8>, not {rest!r}; "
            "put words in the description",
            param="avatars",
        )
    seen: dict[tuple, str] = {}
    for t in tokens:
        key = (t.kind, t.name.lower())
        if key in seen:
            raise InvalidRequest(
                f"avatars: {t.kind.value} avatar '{key[1]}' is used twice: '{seen[key]}' and '{t.text}'",
                param="avatars",
            )
        seen[key] = t.text
    return value


def check_seed(policy: Any, seed: Any) -> tuple[str, int | None]:
    """A known policy, a seed in range, and a seed whenever the policy is "fixed"."""
    if policy not in SEED_POLICIES:
        raise InvalidRequest(f"seed_policy must be 'random' or 'fixed' (got {policy!r})", param="seed_policy")
    if seed is not None and check_seed_value(seed, "seed") == -1:
        seed = None  # -1 is "random" everywhere: no fixed seed
    if policy == "fixed" and seed is None:
        raise InvalidRequest(f"seed_policy 'fixed' needs a seed (0 to {SEED_MAX})", param="seed")
    return policy, seed


class CharacterStore:
    """The characters of every owner, in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(self, s, owner: str, name: str) -> CharacterRow:
        row = s.scalar(
            select(CharacterRow).where(CharacterRow.owner_id == owner, CharacterRow.name_key == str(name).lower())
        )
        if row is None:
            raise CharacterNotFound(f"no character named {name!r}")
        return row

    def _check_free(self, s, owner: str, name: str, character_id: int = -1) -> None:
        taken = select(CharacterRow.name).where(
            CharacterRow.owner_id == owner, CharacterRow.name_key == name.lower(), CharacterRow.id != character_id
        )
        existing = s.scalar(taken)
        if existing is not None:
            raise AvatarExists(f"you already have a character named {existing!r}", param="name")

    def create(
        self,
        owner: str,
        name: str,
        *,
        description: str | None = "",
        avatars: str | None = "",
        negative_prompt: str | None = "",
        seed_policy: str | None = None,
        seed: int | None = None,
    ) -> CharacterInfo:
        """Validate and store a new character; the seed policy defaults to "fixed" when a seed is given."""
        name = check_name(name)
        policy, seed = check_seed(seed_policy or ("fixed" if seed not in (None, -1) else "random"), seed)
        now = int(time.time())
        row = CharacterRow(
            owner_id=owner,
            name=name,
            name_key=name.lower(),
            description=check_text(description, "description"),
            avatars=check_avatars(avatars),
            negative_prompt=check_text(negative_prompt, "negative_prompt"),
            seed_policy=policy,
            seed=seed,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.db.session() as s:
                self._check_free(s, owner, name)
                s.add(row)
        except IntegrityError:  # lost a race with a concurrent create of the same name
            raise AvatarExists(f"you already have a character named {name!r}", param="name") from None
        return _info(row)

    def get(self, owner: str, name: str) -> Character | None:
        """The owner's character (name case-insensitive), or None."""
        try:
            return self.info(owner, name).character
        except CharacterNotFound:
            return None

    def info(self, owner: str, name: str) -> CharacterInfo:
        """The owner's character with its timestamps; CharacterNotFound (404) when there is none."""
        with self.db.session() as s:
            return _info(self._row(s, owner, name))

    def list(self, owner: str) -> list[CharacterInfo]:
        query = select(CharacterRow).where(CharacterRow.owner_id == owner).order_by(CharacterRow.name_key)
        with self.db.session() as s:
            return [_info(r) for r in s.scalars(query)]

    def names(self, owner: str) -> list[str]:
        """The owner's character names (for "did you mean" suggestions)."""
        query = select(CharacterRow.name).where(CharacterRow.owner_id == owner).order_by(CharacterRow.name_key)
        with self.db.session() as s:
            return list(s.scalars(query))

    def update(
        self,
        owner: str,
        name: str,
        *,
        new_name: str | None = None,
        description: str | None = _UNSET,
        avatars: str | None = _UNSET,
        negative_prompt: str | None = _UNSET,
        seed_policy: str | None = None,
        seed: int | None = _UNSET,
    ) -> CharacterInfo:
        """Change the fields given (None clears a text field or the seed); `new_name` renames.

        A seed given without a seed_policy makes the policy "fixed" (None: "random"), as on create.
        """
        with self.db.session() as s:
            row = self._row(s, owner, name)
            if new_name is not None:
                new_name = check_name(new_name)
                self._check_free(s, owner, new_name, character_id=row.id)
            changes: dict[str, Any] = {}
            if description is not _UNSET:
                changes["description"] = check_text(description, "description")
            if avatars is not _UNSET:
                changes["avatars"] = check_avatars(avatars)
            if negative_prompt is not _UNSET:
                changes["negative_prompt"] = check_text(negative_prompt, "negative_prompt")
            if seed is _UNSET:
                seed = row.seed
            elif not seed_policy:  # as on create: giving a seed fixes it, clearing it makes pictures random
                seed_policy = "fixed" if seed is not None else "random"
            policy, new_seed = check_seed(seed_policy or row.seed_policy, seed)
            changes |= {"seed_policy": policy, "seed": new_seed}
            if new_name is not None:
                changes |= {"name": new_name, "name_key": new_name.lower()}
            for key, value in changes.items():
                setattr(row, key, value)
            row.updated_at = int(time.time())
            try:
                s.flush()
            except IntegrityError:
                raise AvatarExists(f"you already have a character named {new_name!r}", param="name") from None
            return _info(row)

    def delete(self, owner: str, name: str) -> CharacterInfo:
        """Delete the character; returns what it was."""
        with self.db.session() as s:
            row = self._row(s, owner, name)
            info = _info(row)
            s.delete(row)
        return info
