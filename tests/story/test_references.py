"""`story.references` without models: which reference a page gets, and the Kontext edit prompt."""

from __future__ import annotations

from pathlib import Path

from pictale.core.types import AvatarKind, AvatarRef, Character
from pictale.story import references

SASHA = Character("sasha", "a girl with red hair", "<be-face:lucy:0.4> <be-lora:toy:0.8>")
TOM = Character("tom", "a boy")
CHARS = {"sasha": SASHA, "tom": TOM}


class Registry:
    def resolve(self, owner, kind, name, weight):
        assert owner == "me" and kind is AvatarKind.FACE
        return AvatarRef(kind, name, weight, (Path("/blobs/ab12"), Path("/blobs/cd34")), "d1gest")


def page(number, characters, chosen=None):
    cands = [{"digest": f"p{number}c0"}, {"digest": f"p{number}c1"}]
    return {"number": number, "characters": characters, "candidates": cands, "chosen": chosen}


def test_a_face_avatar_wins_then_the_first_earlier_page():
    pages = [page(1, ["tom"], chosen=1), page(2, ["tom"], chosen=0), page(3, ["tom", "sasha"]), page(4, ["tom"])]
    face = {"character": "sasha", "source": "avatar", "avatar": "lucy", "digest": "d1gest", "file": "ab12"}
    assert references.find(pages[2], pages, CHARS, Registry(), "me") == face
    assert references.find(pages[2], pages, CHARS, None, "me") == {  # no avatars here: tom's first page
        "character": "tom", "source": "page", "page": 1, "digest": "p1c1",
    }  # fmt: skip
    assert references.find(pages[0], pages, CHARS, Registry(), "me") is None  # nothing before page 1
    pages[0]["chosen"] = None
    assert references.find(pages[3], pages, CHARS, Registry(), "me") == references.PENDING
    assert references.feature_key(face) == "avatar:d1gest:ab12"


def test_edit_prompt_names_the_character_without_its_face():
    prompt = "watercolor, <be-char:sasha>, <be-char:tom>, a kite on a hill"
    assert references.edit_prompt(prompt, SASHA) == (
        "watercolor, Sasha, a girl with red hair, <be-lora:toy:0.8>, <be-char:tom>, a kite on a hill, "
        "while maintaining the same facial features, hairstyle, and expression of Sasha"
    )
    assert references.edit_prompt("a hill.", Character("mr_fox")) == (
        "Mr fox, a hill, while maintaining the same facial features, hairstyle, and expression of Mr fox"
    )
