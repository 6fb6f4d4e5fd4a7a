"""`<be-char:NAME>` expansion on its own: prefix and avatar tokens, negatives, several, twice, unknown, malformed."""

from __future__ import annotations

import pytest

from pictale.core.errors import PromptSyntaxError, UnknownAvatarError
from pictale.core.types import AvatarKind, AvatarRef, Character
from pictale.prompt.characters import add_negatives, check_negative, expand, find_characters, split_parts
from pictale.prompt.compile import compile_prompt

SASHA = Character(
    "Sasha",
    description="a girl with red hair and a green coat",
    avatars="<be-face:lucy:0.4> <be-lora:toy:0.8>",
    negative_prompt="blurry, (bad hands:1.2)",
)
TOM = Character("tom", description="a tall boy", avatars="<be-lora:toy:0.8>", negative_prompt="Blurry, lowres")
BARE = Character("bare")
FACE, LORA = AvatarKind.FACE, AvatarKind.LORA


class Source:
    """A dict-backed CharacterSource (case-insensitive, as the store is)."""

    def __init__(self, *characters: Character) -> None:
        self.by_key = {c.name.lower(): c for c in characters}
        self.asked: list[str] = []

    def get(self, name: str) -> Character | None:
        self.asked.append(name)
        return self.by_key.get(name.lower())

    def names(self) -> list[str]:
        return [c.name for c in self.by_key.values()]


CAST = Source(SASHA, TOM, BARE)


def test_token_becomes_description_then_avatar_tokens():
    out = expand("<be-char:sasha> playing tennis", "", CAST)
    assert out.prompt == "a girl with red hair and a green coat, <be-face:lucy:0.4> <be-lora:toy:0.8> playing tennis"
    assert out.negative_prompt == "blurry, (bad hands:1.2)"
    assert out.characters == (SASHA,)


@pytest.mark.parametrize(
    "token", ["<be-char:sasha>", "<be-char:SASHA>", "< be-char : Sasha >", "<be-character:sasha>", "<BE-CHAR:sasha>"]
)
def test_case_and_whitespace_tolerant_and_the_long_alias(token):
    out = expand(f"{token} playing tennis", "", CAST)
    assert out.prompt == "a girl with red hair and a green coat, <be-face:lucy:0.4> <be-lora:toy:0.8> playing tennis"


class Everyone:
    """An avatar resolver that has every avatar (the avatar compiler's side is tested elsewhere)."""

    def resolve(self, kind, name, weight):
        return AvatarRef(kind=kind, name=name, weight=weight, files=(), digest=name)

    def names(self, kind):
        return []


def test_avatar_tokens_are_left_for_the_avatar_compiler():
    out = expand("<be-char:sasha>, on a beach", "", CAST)
    compiled = compile_prompt(out.prompt, Everyone())
    assert compiled.text == "a girl with red hair and a green coat, on a beach"
    assert [(a.kind, a.name, a.weight) for a in compiled.avatars] == [(FACE, "lucy", 0.4), (LORA, "toy", 0.8)]


def test_negatives_are_appended_comma_joined_without_duplicates():
    out = expand("<be-char:sasha> runs", "ugly, BLURRY", CAST)
    assert out.negative_prompt == "ugly, BLURRY, (bad hands:1.2)"
    assert expand("<be-char:sasha> runs", "ugly, ", CAST).negative_prompt == "ugly, blurry, (bad hands:1.2)"
    assert expand("<be-char:bare> runs", "ugly", CAST).negative_prompt == "ugly"
    assert add_negatives("", [SASHA, TOM]) == "blurry, (bad hands:1.2), lowres"
    assert add_negatives("(bad hands:1.2)", [SASHA]) == "(bad hands:1.2), blurry"


def test_split_parts_keeps_brackets_whole():
    assert split_parts("(a, b:1.2), c ,, <lora:x:1,2>, [d, e]") == ["(a, b:1.2)", "c", "<lora:x:1,2>", "[d, e]"]


def test_two_characters_expand_each_and_share_an_identical_avatar_once():
    out = expand("<be-char:sasha> and <be-char:tom> on a beach", "", CAST)
    assert out.prompt == (
        "a girl with red hair and a green coat, <be-face:lucy:0.4> <be-lora:toy:0.8> and a tall boy on a beach"
    )
    assert out.characters == (SASHA, TOM)
    assert out.negative_prompt == "blurry, (bad hands:1.2), lowres"


def test_a_shared_avatar_at_different_weights_is_a_syntax_error():
    other = Character("ann", avatars="<be-lora:toy:0.5>")
    with pytest.raises(PromptSyntaxError) as info:
        expand("<be-char:sasha> <be-char:ann>", "", Source(SASHA, other))
    assert info.value.message == (
        "characters 'Sasha' and 'ann' both call lora avatar 'toy', at different weights (0.8 and 0.5)"
    )
    assert info.value.param == "prompt"


def test_the_same_character_twice_expands_once_where_it_first_appears():
    out = expand("<be-char:sasha> waves at <be-char:tom>, <be-char:SASHA> smiles", "", CAST)
    assert out.prompt == (
        "a girl with red hair and a green coat, <be-face:lucy:0.4> <be-lora:toy:0.8> waves at a tall boy, smiles"
    )
    assert out.characters == (SASHA, TOM)


def test_a_character_without_description_or_avatars_is_removed_cleanly():
    assert expand("a cat, <be-char:bare>, a dog", "", CAST).prompt == "a cat, a dog"
    assert expand("<be-char:bare> a dog", "", CAST).characters == (BARE,)


def test_prompt_without_characters_is_unchanged_and_never_looks_anything_up():
    source = Source(SASHA)
    out = expand("<be-face:lucy:0.4> a girl, (red:1.2)", "bad", source)
    assert (out.prompt, out.negative_prompt, out.characters) == ("<be-face:lucy:0.4> a girl, (red:1.2)", "bad", ())
    assert source.asked == []
    assert expand("a cat", "", None).prompt == "a cat"  # no store needed without character tokens


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<be-char:sahsa> runs", "unknown character 'sahsa' in '<be-char:sahsa>'; did you mean 'Sasha'?"),
        ("<be-char:zed>", "unknown character 'zed' in '<be-char:zed>'; your characters are 'bare', 'Sasha', 'tom'"),
        (
            "<be-char:sahsa> and <be-char:tim>",
            "unknown character 'sahsa' in '<be-char:sahsa>'; did you mean 'Sasha'?; "
            "unknown character 'tim' in '<be-char:tim>'; did you mean 'tom'?",
        ),
    ],
)
def test_unknown_names_are_422_with_did_you_mean(prompt, message):
    with pytest.raises(UnknownAvatarError) as info:
        expand(prompt, "", CAST)
    assert info.value.message == message
    assert (info.value.status, info.value.code, info.value.param) == (422, "unknown_avatar", "prompt")


def test_unknown_with_no_characters_at_all_and_without_a_store():
    with pytest.raises(UnknownAvatarError) as info:
        expand("<be-char:sasha>", "", Source())
    assert info.value.message == "unknown character 'sasha' in '<be-char:sasha>'; you have no characters"
    with pytest.raises(UnknownAvatarError) as info:
        expand("<be-char:sasha> and <be-char:tom>", "", None, param="hr_prompt")
    assert info.value.message == (
        "characters are not available on this server, so '<be-char:sasha>', '<be-char:tom>' cannot be used"
    )
    assert info.value.param == "hr_prompt"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            "<be-char:sasha:0.5> runs",
            "malformed character token '<be-char:sasha:0.5>': characters take no weight; write <be-char:name>",
        ),
        (
            "<be-char:sasha:x:y>",
            "malformed character token '<be-char:sasha:x:y>': characters take no weight; write <be-char:name>",
        ),
        ("<be-char>", "malformed character token '<be-char>': the name is missing; write <be-char:name>"),
        ("<be-character: >", "malformed character token '<be-character: >': the name is missing; write <be-char:name>"),
        (
            "<be-char:red hair>",
            "malformed character token '<be-char:red hair>': name 'red hair' may only contain letters, digits, "
            "'_', '.' and '-'",
        ),
        (
            "<be-char:x:1> and <be-char>",
            "malformed character token '<be-char:x:1>': characters take no weight; write <be-char:name>; "
            "malformed character token '<be-char>': the name is missing; write <be-char:name>",
        ),
    ],
)
def test_malformed_tokens_are_syntax_errors_quoting_the_token(prompt, message):
    source = Source(SASHA)
    with pytest.raises(PromptSyntaxError) as info:
        expand(prompt, "", source)
    assert info.value.message == message
    assert info.value.status == 422
    assert source.asked == []  # syntax first: nothing is looked up


def test_syntax_errors_come_before_unknown_names():
    with pytest.raises(PromptSyntaxError, match="characters take no weight"):
        expand("<be-char:nobody> <be-char:sasha:1>", "", CAST)


def test_character_tokens_in_a_negative_prompt_are_refused():
    check_negative("blurry, <be-ti:sparkle>")  # embeddings are fine there
    with pytest.raises(PromptSyntaxError) as info:
        check_negative("blurry, <be-char:sasha>")
    assert info.value.message == (
        "'<be-char:sasha>' is in the negative prompt: characters only work in the prompt, not the negative prompt"
    )
    assert info.value.param == "negative_prompt"


def test_find_characters_reports_spans_and_leaves_avatar_tokens_alone():
    tokens, errors = find_characters("<be-face:x> <be-char:Sasha>, <lora:y:1>")
    assert [(t.text, t.start, t.end, t.name) for t in tokens] == [("<be-char:Sasha>", 12, 27, "Sasha")]
    assert errors == []
