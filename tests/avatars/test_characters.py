"""The character store on its own: CRUD, case-insensitive names, per-owner isolation, validation messages."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import inspect

from pictale.avatars.characters import CharacterStore
from pictale.core.errors import AvatarExists, AvatarNotFound, CharacterNotFound, InvalidRequest
from pictale.core.types import Character
from pictale.storage.db import Database


@pytest.fixture
def store(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'pictale.db'}")
    db.migrate()
    yield CharacterStore(db)
    db.dispose()


def make_sasha(store: CharacterStore, owner: str = "k1"):
    return store.create(
        owner,
        "Sasha",
        description="a girl with red hair",
        avatars="<be-face:lucy:0.4> <be-lora:toy:0.8>",
        negative_prompt="blurry",
    )


def test_create_get_and_json(store):
    before = int(time.time())
    info = make_sasha(store)
    assert before <= info.created == info.updated <= int(time.time())
    sasha = Character("Sasha", "a girl with red hair", "<be-face:lucy:0.4> <be-lora:toy:0.8>", "blurry", "random", None)
    assert info.character == sasha
    assert info.to_json() == {
        "object": "character",
        "name": "Sasha",
        "description": "a girl with red hair",
        "avatars": "<be-face:lucy:0.4> <be-lora:toy:0.8>",
        "negative_prompt": "blurry",
        "seed_policy": "random",
        "seed": None,
        "created": info.created,
        "updated": info.updated,
    }
    assert store.get("k1", "sasha") == sasha  # names are case-insensitive
    assert store.get("k1", "SASHA").prefix == "a girl with red hair, <be-face:lucy:0.4> <be-lora:toy:0.8>"
    assert store.info("k1", "sAsHa").name == "Sasha"
    assert store.get("k1", "tom") is None


def test_table_exists_after_migration(store):
    assert "characters" in inspect(store.db.engine).get_table_names()


def test_list_names_update_delete(store):
    make_sasha(store)
    store.create("k1", "tom", seed=42)
    store.create("k1", "anna.b-2")
    assert [i.name for i in store.list("k1")] == ["anna.b-2", "Sasha", "tom"]
    assert store.names("k1") == ["anna.b-2", "Sasha", "tom"]
    tom = store.get("k1", "tom")
    assert (tom.seed_policy, tom.seed) == ("fixed", 42)  # a seed given means a fixed seed

    updated = store.update("k1", "sasha", description="a girl with short red hair")
    assert updated.character.description == "a girl with short red hair"
    assert updated.character.avatars == "<be-face:lucy:0.4> <be-lora:toy:0.8>"  # partial: the rest stays
    assert updated.character.negative_prompt == "blurry"
    assert store.update("k1", "sasha", negative_prompt=None).character.negative_prompt == ""

    assert store.update("k1", "sasha", seed=7).character.seed_policy == "fixed"
    again = store.update("k1", "sasha", seed_policy="random")
    assert (again.character.seed_policy, again.character.seed) == ("random", 7)  # kept for a later "fixed"
    assert store.update("k1", "sasha", seed_policy="fixed").character.seed == 7
    cleared = store.update("k1", "sasha", seed=None)
    assert (cleared.character.seed_policy, cleared.character.seed) == ("random", None)

    renamed = store.update("k1", "sasha", new_name="Alexandra")
    assert renamed.name == "Alexandra" and store.get("k1", "sasha") is None
    assert store.get("k1", "alexandra").description == "a girl with short red hair"
    assert store.update("k1", "alexandra", new_name="ALEXANDRA").name == "ALEXANDRA"  # a case change is no clash

    deleted = store.delete("k1", "tom")
    assert deleted.name == "tom" and store.names("k1") == ["ALEXANDRA", "anna.b-2"]


def test_duplicate_names_are_409_case_insensitively(store):
    make_sasha(store)
    with pytest.raises(AvatarExists) as info:
        store.create("k1", "SASHA")
    assert info.value.message == "you already have a character named 'Sasha'"
    assert (info.value.status, info.value.param) == (409, "name")
    store.create("k1", "tom")
    with pytest.raises(AvatarExists, match="you already have a character named 'Sasha'"):
        store.update("k1", "tom", new_name="sasha")


def test_owners_never_see_each_others_characters(store):
    make_sasha(store, "k1")
    assert store.get("k2", "sasha") is None
    assert store.list("k2") == [] and store.names("k2") == []
    for call in (
        lambda: store.info("k2", "sasha"),
        lambda: store.update("k2", "sasha", description="x"),
        lambda: store.delete("k2", "sasha"),
    ):
        with pytest.raises(CharacterNotFound) as info:
            call()
        assert info.value.message == "no character named 'sasha'"
        assert (info.value.status, info.value.code) == (404, "character_not_found")
        assert isinstance(info.value, AvatarNotFound)
    other = store.create("k2", "sasha", description="someone else")  # the same name is free for another key
    assert other.name == "sasha" and store.get("k1", "sasha").description == "a girl with red hair"


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {"name": "red hair"},
            "name",
            "character name 'red hair' is not allowed: use 1-64 characters from letters, digits, '_', '.' and '-'",
        ),
        (
            {"name": ""},
            "name",
            "character name '' is not allowed: use 1-64 characters from letters, digits, '_', '.' and '-'",
        ),
        (
            {"name": "x" * 65},
            "name",
            f"character name '{'x' * 65}' is not allowed: use 1-64 characters from letters, digits, '_', '.' and '-'",
        ),
        ({"description": "d" * 4001}, "description", "description is 4001 characters long; the limit is 4000"),
        (
            {"negative_prompt": "n" * 2001},
            "negative_prompt",
            "negative_prompt is 2001 characters long; the limit is 2000",
        ),
        ({"avatars": "<be-face:x> " * 100}, "avatars", "avatars is 1199 characters long; the limit is 1000"),
        (
            {"avatars": "<be-face:lucy:abc>"},
            "avatars",
            "avatars: malformed avatar token '<be-face:lucy:abc>': weight 'abc' is not a number",
        ),
        (
            {"avatars": "<be-hat:x>"},
            "avatars",
            "avatars: unknown avatar kind 'hat' in '<be-hat:x>'; kinds are face, style, pose, lora, embedding "
            "(or ti, embed, emb)",
        ),
        (
            {"avatars": "<be-face:lucy:0.4> red hair"},
            "avatars",
            "avatars may only contain avatar tokens such as <be-face:lucy:0.4> <be-lora:toy:0.8>, not 'red hair'; "
            "put words in the description",
        ),
        ({"avatars": "<hypernet:x:1>"}, "avatars", "avatars: '<hypernet:x:1>' is not an avatar token"),
        (
            {"avatars": "<be-lora:toy:0.5> <lora:toy:1>"},
            "avatars",
            "avatars: lora avatar 'toy' is used twice: '<be-lora:toy:0.5>' and '<lora:toy:1>'",
        ),
        (
            {"avatars": "<be-char:tom>"},
            "avatars",
            "avatars cannot call a character (<be-char:...>): characters do not nest",
        ),
        (
            {"description": "friend of <be-char:tom>"},
            "description",
            "description cannot call a character (<be-char:...>): characters do not nest",
        ),
        ({"seed_policy": "sometimes"}, "seed_policy", "seed_policy must be 'random' or 'fixed' (got 'sometimes')"),
        ({"seed_policy": "fixed"}, "seed", "seed_policy 'fixed' needs a seed (0 to 4294967295)"),
        ({"seed": -2}, "seed", "seed must be a whole number from -1 (random) to 4294967295 (got -2)"),
        ({"seed": 4294967296}, "seed", "seed must be a whole number from -1 (random) to 4294967295 (got 4294967296)"),
        ({"seed_policy": "fixed", "seed": -1}, "seed", "seed_policy 'fixed' needs a seed (0 to 4294967295)"),
    ],
)
def test_validation_names_the_field_and_the_limit(store, fields, param, message):
    fields = {"name": "sasha", **fields}
    with pytest.raises(InvalidRequest) as info:
        store.create("k1", fields.pop("name"), **fields)
    assert info.value.message == message
    assert (info.value.status, info.value.param) == (422, param)
    assert store.list("k1") == []


def test_avatars_accept_commas_newlines_and_a1111_lora_tags(store):
    text = "<be-face:lucy:0.4>,\n<lora:toy:0.8>, <be-style:cartoon1>"
    assert store.create("k1", "ok", avatars=f"  {text} ").character.avatars == text


def test_update_validates_too_and_changes_nothing_on_error(store):
    make_sasha(store)
    with pytest.raises(InvalidRequest, match="avatars may only contain avatar tokens"):
        store.update("k1", "sasha", description="new", avatars="a hat")
    with pytest.raises(InvalidRequest, match="seed_policy 'fixed' needs a seed"):
        store.update("k1", "sasha", seed_policy="fixed")
    with pytest.raises(InvalidRequest, match="character name 'no way' is not allowed"):
        store.update("k1", "sasha", new_name="no way")
    assert store.get("k1", "sasha").description == "a girl with red hair"
