"""Character references: on a FLUX.1 Kontext model, a page that shows a character is a Kontext edit of the
character's reference image, so the character keeps its look from page to page (flux.md section 7).

- The reference of a character: the first image of its first face avatar (a `<be-face:...>` token among its
  avatars, at any weight); else the chosen image of the first earlier page that shows it, so later pages
  refer back to where it was first drawn. Kontext takes one reference per picture: a page with several
  characters uses the first one with a face avatar, else the first one with an earlier page.
- The edit: img2img with the reference as init image at the book's `reference_strength` (1.0: a new picture,
  steered by the reference), fitted into the page's size with its aspect ratio kept (A1111's "resize and
  fill"). The prompt names the character in its token's place (description and avatars, without its face
  avatars: the reference carries the face, so no IP-Adapter is needed) and ends with BFL's advice, "while
  maintaining the same facial features, hairstyle, and expression".
- Every page with a reference records it (`page["reference"]`, `used`: whether it was the init image), and
  its candidates get `clip_i_ref`, CLIP-I against that image, also where it was not used (references off, or
  a model that is not Kontext): the same number with and without the reference, for comparison.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from pictale.core.errors import UnknownAvatarError
from pictale.core.types import AvatarKind, Character
from pictale.prompt.characters import find_characters
from pictale.prompt.grammar import Token, scan, splice
from pictale.storage.blobs import BlobStore

PENDING = "pending"
"""The reference is an earlier page that has no chosen image yet: ask again once it has one."""
RESIZE_AND_FILL = 2
KEEP = "while maintaining the same facial features, hairstyle, and expression"


def find(page: dict, pages: list[dict], chars: dict[str, Character], registry: Any, owner: str) -> dict | str | None:
    """The reference of `page` (a JSON-ready dict), PENDING, or None when no character of it has one."""
    names = [n for n in page.get("characters", []) if n.lower() in chars]
    for name in names:
        face = _face(chars[name.lower()], registry, owner)
        if face is not None:
            return {"character": chars[name.lower()].name, "source": "avatar", **face}
    for name in names:
        first = next((p for p in pages if p["number"] < page["number"] and _shows(p, name)), None)
        if first is None:
            continue
        if first.get("chosen") is None:
            return PENDING
        digest = first["candidates"][first["chosen"]]["digest"]
        return {"character": chars[name.lower()].name, "source": "page", "page": first["number"], "digest": digest}
    return None


def _shows(page: dict, name: str) -> bool:
    return name.lower() in {n.lower() for n in page.get("characters", [])}


def _face(ch: Character, registry: Any, owner: str) -> dict | None:
    if registry is None:
        return None
    tokens, _errors = scan(ch.avatars or "")
    for token in tokens:
        if token.kind is not AvatarKind.FACE:
            continue
        ref = registry.resolve(owner, token.kind, token.name, 1.0)
        if ref is not None and ref.files:
            return {"avatar": ref.name, "digest": ref.digest, "file": ref.files[0].name}
    return None


def feature_key(ref: dict) -> str:
    """The key of the reference's CLIP embedding in the run's feature cache (shared with the ranking's)."""
    return f"avatar:{ref['digest']}:{ref['file']}" if ref["source"] == "avatar" else ref["digest"]


def load(ref: dict, registry: Any, owner: str, images: BlobStore) -> Image.Image:
    """The reference image (RGB)."""
    if ref["source"] == "avatar":
        avatar = registry.resolve(owner, AvatarKind.FACE, ref["avatar"], 1.0) if registry is not None else None
        if avatar is None or not avatar.files:
            raise UnknownAvatarError(
                f"face avatar {ref['avatar']!r}, the reference of character {ref['character']!r}, no longer exists",
                param="characters",
            )
        path = next((p for p in avatar.files if p.name == ref["file"]), avatar.files[0])  # replaced: its first
        data = path.read_bytes()
    else:
        data = images.path(ref["digest"]).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def edit_prompt(prompt: str, ch: Character) -> str:
    """The page prompt for a Kontext edit: the character named in its token's place, without its face avatars,
    and BFL's "while maintaining the same facial features, hairstyle, and expression" at the end."""
    label = ch.name.replace("_", " ").replace("-", " ")
    label = label[:1].upper() + label[1:]
    avatars, _errors = scan(ch.avatars or "")
    without_face = splice(ch.avatars or "", [(t, "") for t in avatars if t.kind is AvatarKind.FACE])
    named = ", ".join(p for p in (label, ch.description.strip(), without_face.strip()) if p)
    tokens, _errors = find_characters(prompt)
    edits: list[tuple[Token, str]] = []
    for token in tokens:
        if token.name.lower() == ch.name.lower():
            edits.append((Token(token.text, token.start, token.end, None), "" if edits else named))
    text = splice(prompt, edits) if edits else f"{named}, {prompt}"
    return f"{text.rstrip(' ,.')}, {KEEP} of {label}"
