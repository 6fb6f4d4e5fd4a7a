"""Prompt compilation against a fake resolver: refs in token order, embeddings, unknown names, negatives."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pictale.core.errors import PromptSyntaxError, UnknownAvatarError
from pictale.core.types import AvatarKind, AvatarRef
from pictale.prompt.compile import CompiledPrompt, compile_negative, compile_prompt, describe, lora_hashes

FACE, STYLE, POSE, LORA, EMB = (
    AvatarKind.FACE,
    AvatarKind.STYLE,
    AvatarKind.POSE,
    AvatarKind.LORA,
    AvatarKind.EMBEDDING,
)


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class FakeResolver:
    """Avatars by kind and lower-case name; LoRA lookups are case-insensitive like the real one."""

    def __init__(self, avatars: dict[AvatarKind, list[str]]) -> None:
        self.avatars = avatars
        self.calls: list[tuple[AvatarKind, str, float]] = []

    def resolve(self, kind: AvatarKind, name: str, weight: float) -> AvatarRef | None:
        self.calls.append((kind, name, weight))
        for known in self.avatars.get(kind, []):
            if known.lower() == name.lower():
                return AvatarRef(
                    kind=kind,
                    name=known,
                    weight=weight,
                    files=(Path(f"/blobs/{known}"),),
                    digest=_sha(known),
                    token=f"<emb-{known}>" if kind is EMB else None,
                )
        return None

    def names(self, kind: AvatarKind) -> list[str]:
        return list(self.avatars.get(kind, []))


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver(
        {
            FACE: ["lucy", "anna"],
            STYLE: ["cartoon1", "watercolor"],
            POSE: ["pose1", "run"],
            LORA: ["toy", "Detail_Tweaker"],
            EMB: ["badhands", "easyneg"],
        }
    )


def summary(compiled: CompiledPrompt) -> list[tuple[AvatarKind, str, float]]:
    return [(a.kind, a.name, a.weight) for a in compiled.avatars]


def test_refs_in_token_order_with_weights(resolver):
    compiled = compile_prompt(
        "<be-pose:run:0.8>, <be-face:Lucy:0,9> <be-style:cartoon1> a woman playing tennis, <be-lora:toy:0.9>, blue",
        resolver,
    )
    assert compiled.text == "a woman playing tennis, blue"
    assert summary(compiled) == [(POSE, "run", 0.8), (FACE, "lucy", 0.9), (STYLE, "cartoon1", 0.5), (LORA, "toy", 0.9)]
    assert resolver.calls[1] == (FACE, "lucy", 0.9)


def test_weight_zero_refs_are_kept(resolver):
    compiled = compile_prompt("a girl, <be-face:lucy:0>, <be-lora:toy:0>", resolver)
    assert compiled.text == "a girl"
    assert summary(compiled) == [(FACE, "lucy", 0.0), (LORA, "toy", 0.0)]


def test_no_tokens_leaves_text_untouched(resolver):
    prompt = "a cat,, (happy:1.2)  BREAK  dog "
    assert compile_prompt(prompt, resolver) == CompiledPrompt(prompt, ())
    assert compile_prompt(prompt, None) == CompiledPrompt(prompt, ())
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("prompt", "text", "weight"),
    [
        ("a girl, <be-embedding:badhands>, b", "a girl, <emb-badhands>, b", 1.0),
        ("a girl, <be-ti:badhands:1.0>, b", "a girl, <emb-badhands>, b", 1.0),
        ("a girl, <be-ti:badhands:0.7>, b", "a girl, (<emb-badhands>:0.7), b", 0.7),
        ("a girl, <be-ti:badhands:0,7>, b", "a girl, (<emb-badhands>:0.7), b", 0.7),
        ("a girl, <be-emb:badhands:1.5>", "a girl, (<emb-badhands>:1.5)", 1.5),
        ("a girl, <be-ti:badhands:0>, b", "a girl, b", 0.0),
        ("<be-ti:badhands:0> a girl", "a girl", 0.0),
        ("(<be-ti:badhands>:1.2) a girl", "(<emb-badhands>:1.2) a girl", 1.0),
    ],
)
def test_embedding_substitution(resolver, prompt, text, weight):
    compiled = compile_prompt(prompt, resolver)
    assert compiled.text == text
    assert summary(compiled) == [(EMB, "badhands", weight)]


def test_embedding_without_token_uses_its_name():
    class NoToken(FakeResolver):
        def resolve(self, kind, name, weight):
            ref = super().resolve(kind, name, weight)
            return AvatarRef(kind, ref.name, weight, ref.files, ref.digest) if ref else None

    assert compile_prompt("<be-ti:easyneg:0.5> x", NoToken({EMB: ["easyneg"]})).text == "(easyneg:0.5) x"


def test_resolver_weight_is_overridden_by_the_token():
    class Stubborn(FakeResolver):
        def resolve(self, kind, name, weight):
            return super().resolve(kind, name, 1.0)

    assert summary(compile_prompt("<be-face:lucy:0.3>", Stubborn({FACE: ["lucy"]}))) == [(FACE, "lucy", 0.3)]


def test_a1111_lora_tags_resolve_loras(resolver):
    compiled = compile_prompt("<lora:detail_tweaker:0.5:0.2>, a girl <lyco:TOY>, <hypernet:x:1>", resolver)
    assert compiled.text == "a girl"
    assert summary(compiled) == [(LORA, "Detail_Tweaker", 0.5), (LORA, "toy", 1.0)]
    assert resolver.calls[0] == (LORA, "detail_tweaker", 0.5)


def test_a1111_tags_without_resolver_are_removed_silently():
    compiled = compile_prompt("a girl, <lora:toy:0.9>, <hypernet:x:1>, smiling", None)
    assert compiled == CompiledPrompt("a girl, smiling", ())


def test_be_tokens_without_resolver():
    with pytest.raises(UnknownAvatarError) as info:
        compile_prompt("<be-face:lucy:0.4> a girl <be-lora:toy> <lora:x:1>", None)
    assert info.value.message == (
        "avatars are not available on this server, so '<be-face:lucy:0.4>', '<be-lora:toy>' cannot be used"
    )
    assert info.value.status == 422 and info.value.param == "prompt"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<be-face:lucie:0.4>", "unknown face avatar 'lucie' in '<be-face:lucie:0.4>'; did you mean 'lucy'?"),
        ("<be-style:cartoon>", "unknown style avatar 'cartoon' in '<be-style:cartoon>'; did you mean 'cartoon1'?"),
        ("<be-face:bob>", "unknown face avatar 'bob' in '<be-face:bob>'; your face avatars are 'anna', 'lucy'"),
        ("<be-pose:jump:1>", "unknown pose avatar 'jump' in '<be-pose:jump:1>'; your pose avatars are 'pose1', 'run'"),
        (
            "<lora:detail_tweakr:0.5>",
            "unknown lora avatar 'detail_tweakr' in '<lora:detail_tweakr:0.5>'; did you mean 'Detail_Tweaker'?",
        ),
        ("<be-ti:badhand>", "unknown embedding avatar 'badhand' in '<be-ti:badhand>'; did you mean 'badhands'?"),
        (
            "<be-face:lucie>, <be-style:cartoon1>, <be-style:oil>",
            "unknown face avatar 'lucie' in '<be-face:lucie>'; did you mean 'lucy'?; "
            "unknown style avatar 'oil' in '<be-style:oil>'; your style avatars are 'cartoon1', 'watercolor'",
        ),
    ],
)
def test_unknown_names_suggest(resolver, prompt, message):
    with pytest.raises(UnknownAvatarError) as info:
        compile_prompt(prompt, resolver)
    assert info.value.message == message
    assert info.value.status == 422


def test_unknown_name_when_kind_is_empty():
    with pytest.raises(UnknownAvatarError) as info:
        compile_prompt("<be-face:lucy>", FakeResolver({}))
    assert info.value.message == "unknown face avatar 'lucy' in '<be-face:lucy>'; you have no face avatars"


def test_unknown_name_lists_at_most_ten():
    resolver = FakeResolver({FACE: [f"zz{i:02d}" for i in range(13)]})
    with pytest.raises(UnknownAvatarError) as info:
        compile_prompt("<be-face:lucy>", resolver)
    assert info.value.message.endswith("'zz08', 'zz09' and 3 more")


def test_several_close_names():
    resolver = FakeResolver({FACE: ["lucy1", "lucy2", "lucy3", "lucy4"]})
    with pytest.raises(UnknownAvatarError, match=r"did you mean 'lucy1', 'lucy2' or 'lucy3'\?$"):
        compile_prompt("<be-face:lucy>", resolver)


def test_syntax_errors_come_before_resolution(resolver):
    with pytest.raises(PromptSyntaxError) as info:
        compile_prompt("<be-face:nobody> <be-face:lucy:abc>", resolver)
    assert info.value.message == "malformed avatar token '<be-face:lucy:abc>': weight 'abc' is not a number"
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            "<be-face:lucy:0.4> a <be-face:Lucy:0.6>",
            "avatar face 'lucy' is used twice: '<be-face:lucy:0.4>' and '<be-face:Lucy:0.6>'",
        ),
        ("<be-lora:toy:0.9> <lora:Toy:1>", "avatar lora 'toy' is used twice: '<be-lora:toy:0.9>' and '<lora:Toy:1>'"),
        (
            "<be-ti:badhands> <be-embedding:badhands>",
            "avatar embedding 'badhands' is used twice: '<be-ti:badhands>' and '<be-embedding:badhands>'",
        ),
    ],
)
def test_same_avatar_twice_is_an_error(resolver, prompt, message):
    with pytest.raises(PromptSyntaxError) as info:
        compile_prompt(prompt, resolver)
    assert info.value.message == message


def test_same_name_different_kinds_is_fine():
    resolver = FakeResolver({FACE: ["lucy"], STYLE: ["lucy"]})
    assert summary(compile_prompt("<be-face:lucy> <be-style:lucy>", resolver)) == [
        (FACE, "lucy", 0.4),
        (STYLE, "lucy", 0.5),
    ]


def test_negative_allows_embeddings(resolver):
    compiled = compile_negative("<be-ti:easyneg:0.8>, blurry, <be-embedding:badhands>", resolver)
    assert compiled.text == "(<emb-easyneg>:0.8), blurry, <emb-badhands>"
    assert summary(compiled) == [(EMB, "easyneg", 0.8), (EMB, "badhands", 1.0)]


def test_negative_strips_a1111_tags_unresolved(resolver):
    compiled = compile_negative("blurry, <lora:toy:1>, <lora:missing:1>, <hypernet:x:1>, ugly", resolver)
    assert compiled == CompiledPrompt("blurry, ugly", ())
    assert resolver.calls == []


def test_negative_rejects_other_avatars(resolver):
    with pytest.raises(PromptSyntaxError) as info:
        compile_negative("<be-face:lucy:0.4>, blurry, <be-ti:easyneg>, <be-lora:toy>", resolver)
    assert info.value.message == (
        "'<be-face:lucy:0.4>' is in the negative prompt: face avatars only work in the prompt, "
        "not the negative prompt; "
        "'<be-lora:toy>' is in the negative prompt: lora avatars only work in the prompt, not the negative prompt"
    )
    assert info.value.param == "negative_prompt"


def test_negative_unknown_embedding(resolver):
    with pytest.raises(UnknownAvatarError) as info:
        compile_negative("<be-ti:easynegative>", resolver)
    assert (
        info.value.message
        == "unknown embedding avatar 'easynegative' in '<be-ti:easynegative>'; did you mean 'easyneg'?"
    )
    assert info.value.param == "negative_prompt"


def test_negative_embedding_without_resolver():
    with pytest.raises(UnknownAvatarError, match="avatars are not available"):
        compile_negative("<be-ti:easyneg>", None)
    assert compile_negative("blurry, <lora:x:1>", None) == CompiledPrompt("blurry", ())


def test_describe_and_lora_hashes(resolver):
    compiled = compile_prompt(
        "<be-face:lucy> <be-style:cartoon1:0.7> <lora:detail_tweaker:0> <be-lora:toy:0.9> <be-ti:badhands:1.25>",
        resolver,
    )
    assert describe(compiled.avatars) == (
        "face:lucy:0.4, style:cartoon1:0.7, lora:Detail_Tweaker:0, lora:toy:0.9, embedding:badhands:1.25"
    )
    assert lora_hashes(compiled.avatars) == f"Detail_Tweaker: {_sha('Detail_Tweaker')[:12]}, toy: {_sha('toy')[:12]}"
    assert describe(()) == ""


def test_lora_hashes_none_without_hashed_loras(resolver):
    face = compile_prompt("<be-face:lucy>", resolver).avatars
    assert lora_hashes(face) is None
    unhashed = AvatarRef(LORA, "a:b,c", 1.0, (), digest="")
    assert lora_hashes((unhashed,)) is None
    hashed = AvatarRef(LORA, "a:b,c", 1.0, (), digest="abcdef0123456789")
    assert lora_hashes((hashed,)) == "abc: abcdef012345"
