"""Avatar token grammar: every accepted form, defaults, ranges, A1111 tags, separator clean-up, exact errors."""

from __future__ import annotations

import pytest

from pictale.core.errors import PromptSyntaxError
from pictale.core.types import AvatarKind
from pictale.prompt.grammar import DEFAULT_WEIGHTS, WEIGHT_RANGES, format_weight, parse, scan, splice

FACE, STYLE, POSE, LORA, EMB = (
    AvatarKind.FACE,
    AvatarKind.STYLE,
    AvatarKind.POSE,
    AvatarKind.LORA,
    AvatarKind.EMBEDDING,
)


def found(prompt: str) -> list[tuple]:
    return [(t.kind, t.name, t.weight) for t in parse(prompt)]


def stripped(prompt: str) -> str:
    """The prompt with every token removed."""
    return splice(prompt, [(t, "") for t in parse(prompt)])


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<be-face:lucy:0.4>", [(FACE, "lucy", 0.4)]),
        ("<be-style:cartoon1:0.7>", [(STYLE, "cartoon1", 0.7)]),
        ("<be-pose:run:0.8>", [(POSE, "run", 0.8)]),
        ("<be-lora:toy:0.9>", [(LORA, "toy", 0.9)]),
        ("<be-lora:toy:-1.5>", [(LORA, "toy", -1.5)]),
        ("<be-embedding:badhands:1.2>", [(EMB, "badhands", 1.2)]),
        ("<be-ti:badhands:1>", [(EMB, "badhands", 1.0)]),
        ("<be-embed:badhands>", [(EMB, "badhands", 1.0)]),
        ("<be-emb:badhands:0>", [(EMB, "badhands", 0.0)]),
        # defaults per kind
        ("<be-face:lucy>", [(FACE, "lucy", 0.4)]),
        ("<be-style:cartoon1>", [(STYLE, "cartoon1", 0.5)]),
        ("<be-pose:run>", [(POSE, "run", 1.0)]),
        ("<be-lora:toy>", [(LORA, "toy", 1.0)]),
        # comma decimals (SillyTavern's processReply: "0.9" -> "0,9" -> "0, 9")
        ("<be-face:lucy:0,9>", [(FACE, "lucy", 0.9)]),
        ("<be-face:lucy:0, 9>", [(FACE, "lucy", 0.9)]),
        ("<be-style:x:1,25>", [(STYLE, "x", 1.25)]),
        # other number shapes
        ("<be-face:lucy:.5>", [(FACE, "lucy", 0.5)]),
        ("<be-face:lucy:1.>", [(FACE, "lucy", 1.0)]),
        ("<be-face:lucy:+0.3>", [(FACE, "lucy", 0.3)]),
        ("<be-face:lucy:0>", [(FACE, "lucy", 0.0)]),
        # case and whitespace
        ("<BE-FACE:Lucy:0.4>", [(FACE, "lucy", 0.4)]),
        ("<Be-Ti:BadHands>", [(EMB, "badhands", 1.0)]),
        ("<be-face: lucy :0.4>", [(FACE, "lucy", 0.4)]),
        ("< be-face : lucy : 0.4 >", [(FACE, "lucy", 0.4)]),
        # names with the allowed punctuation
        ("<be-face:lucy_v2.final-b:0.3>", [(FACE, "lucy_v2.final-b", 0.3)]),
        # several tokens, in prompt order, next to commas and words
        (
            "<be-face:lucy:0.9> <be-style:cartoon1:0.5> <be-pose:pose1:0.7> A woman playing tennis, blue jacket",
            [(FACE, "lucy", 0.9), (STYLE, "cartoon1", 0.5), (POSE, "pose1", 0.7)],
        ),
        ("a girl,<be-lora:t:1>,<be-face:x:0.2>", [(LORA, "t", 1.0), (FACE, "x", 0.2)]),
        ("word<be-face:x>word", [(FACE, "x", 0.4)]),
        # range bounds are inclusive
        (
            "<be-face:a:1.5> <be-style:b:1.5> <be-pose:c:2> <be-lora:d:-2> <be-ti:e:2>",
            [
                (FACE, "a", 1.5),
                (STYLE, "b", 1.5),
                (POSE, "c", 2.0),
                (LORA, "d", -2.0),
                (EMB, "e", 2.0),
            ],
        ),
        # not tokens
        ("a cat, (happy:1.2), [sad], BREAK", []),
        ("I <3 you, x > y", []),
        ("be-face:lucy:0.4", []),
    ],
)
def test_accepted_forms(prompt, expected):
    assert found(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<lora:toy>", [(LORA, "toy", 1.0)]),
        ("<lora:toy:0.8>", [(LORA, "toy", 0.8)]),
        ("<lora:toy:0.8:0.3>", [(LORA, "toy", 0.8)]),  # te weight is used
        ("<lora:toy:unet=0.3:te=0.6>", [(LORA, "toy", 0.6)]),
        ("<lora:toy:0.8:te=0.5>", [(LORA, "toy", 0.5)]),  # named te wins, as in A1111
        ("<lora:toy:unet=0.3>", [(LORA, "toy", 1.0)]),
        ("<lyco:toy:0.7>", [(LORA, "toy", 0.7)]),
        ("<LORA:toy:0.7>", [(LORA, "toy", 0.7)]),
        ("<lora:toy:0,7>", [(LORA, "toy", 0.7)]),
        ("<lora:toy:5>", [(LORA, "toy", 5.0)]),  # no range check on A1111 tags
        ("<lora: Detail Tweaker : 0.5 >", [(LORA, "Detail Tweaker", 0.5)]),  # name as written
        ("<hypernet:h:1>", [(None, "", 1.0)]),
        ("<lora:a:1> <be-lora:b:0.5> <lora:c>", [(LORA, "a", 1.0), (LORA, "b", 0.5), (LORA, "c", 1.0)]),
    ],
)
def test_a1111_tags(prompt, expected):
    assert found(prompt) == expected
    assert all(t.a1111 == t.text.lower().startswith(("<lora", "<lyco", "<hyper")) for t in parse(prompt))


def test_token_spans_quote_the_prompt():
    prompt = "a, < be-Face : Lucy : 0,4 >, <lora:toy:1>"
    assert [prompt[t.start : t.end] for t in parse(prompt)] == [t.text for t in parse(prompt)]
    assert [t.text for t in parse(prompt)] == ["< be-Face : Lucy : 0,4 >", "<lora:toy:1>"]


def test_defaults_and_ranges_table():
    assert DEFAULT_WEIGHTS == {FACE: 0.4, STYLE: 0.5, POSE: 1.0, LORA: 1.0, EMB: 1.0}
    assert WEIGHT_RANGES == {FACE: (0, 1.5), STYLE: (0, 1.5), POSE: (0, 2), LORA: (-2, 2), EMB: (0, 2)}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a, <be-face:x>, b", "a, b"),
        ("<be-face:x> a girl", "a girl"),
        ("<be-face:x>, a girl", "a girl"),
        ("a girl,<be-lora:t:1>", "a girl"),
        ("a girl, <be-lora:t:1>", "a girl"),
        ("a girl <be-lora:t:1>", "a girl"),
        ("a <be-face:x> b", "a b"),
        ("a<be-face:x>b", "a b"),
        ("a,<be-face:x>,b", "a, b"),
        ("a <be-face:x>, b", "a, b"),
        ("a, <be-face:x> b", "a, b"),
        ("a ,  <be-face:x>  , b", "a, b"),
        ("a, <be-face:x>, <be-style:y>, b", "a, b"),
        ("a <be-face:x><be-style:y> b", "a b"),
        ("<be-face:x> <be-style:y> <be-pose:z> a woman, blue jacket", "a woman, blue jacket"),
        ("<be-face:x><be-style:y>", ""),
        ("<be-face:x>", ""),
        ("  <be-face:x>  ", ""),
        ("(a, <be-face:x>)", "(a)"),
        ("(<be-face:x> a)", "(a)"),
        ("(a <be-face:x>:1.2)", "(a:1.2)"),
        ("a, <lora:toy:1>, <hypernet:h:1>, b", "a, b"),
        ("<lora:toy:0.9> toy_face, a girl", "toy_face, a girl"),
        # newlines preserved; a line of only tokens disappears
        ("line one\n<be-face:x>\nline two", "line one\nline two"),
        ("line one,\n<be-face:x>, line two", "line one,\nline two"),
        ("line one, <be-face:x>\nline two", "line one\nline two"),
        ("<be-face:x>\nline two", "line two"),
        ("line one\n<be-face:x>", "line one"),
        ("a\n\n<be-face:x> b\n\nc", "a\n\nb\n\nc"),
        # text away from tokens is untouched
        ("a,,  b, <be-face:x>, c  ,, d", "a,,  b, c  ,, d"),
        ("no tokens,, here  ", "no tokens,, here  "),
    ],
)
def test_separators_tidied(prompt, expected):
    assert stripped(prompt) == expected


def test_splice_substitutes_without_tidying():
    prompt = "a, <be-ti:x:0.7>, b <be-face:y>"
    embedding, face = parse(prompt)
    assert splice(prompt, [(embedding, "(emb_1:0.7)"), (face, "")]) == "a, (emb_1:0.7), b"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            "<be-face:Lucy Smith:0.5>",
            "malformed avatar token '<be-face:Lucy Smith:0.5>': "
            "name 'Lucy Smith' may only contain letters, digits, '_', '.' and '-'",
        ),
        ("<be-face:lucy:abc>", "malformed avatar token '<be-face:lucy:abc>': weight 'abc' is not a number"),
        ("<be-face:lucy:1e3>", "malformed avatar token '<be-face:lucy:1e3>': weight '1e3' is not a number"),
        ("<be-face:lucy:nan>", "malformed avatar token '<be-face:lucy:nan>': weight 'nan' is not a number"),
        ("<be-face:lucy:>", "malformed avatar token '<be-face:lucy:>': the weight after ':' is empty"),
        (
            "<be-face::0.4>",
            "malformed avatar token '<be-face::0.4>': the name is missing; "
            "write <be-face:name> or <be-face:name:weight>",
        ),
        (
            "<be-face>",
            "malformed avatar token '<be-face>': the name is missing; write <be-face:name> or <be-face:name:weight>",
        ),
        (
            "<be-face:lucy:0.4:extra>",
            "malformed avatar token '<be-face:lucy:0.4:extra>': too many ':' parts; "
            "write <be-face:name> or <be-face:name:weight>",
        ),
        (
            "<be-hat:x:1>",
            "unknown avatar kind 'hat' in '<be-hat:x:1>'; kinds are face, style, pose, lora, embedding "
            "(or ti, embed, emb)",
        ),
        (
            "<be->",
            "malformed avatar token '<be->': the kind is missing; kinds are face, style, pose, lora, embedding "
            "(or ti, embed, emb)",
        ),
        ("<be-pose1:0.7>", "unknown avatar kind 'pose1' in '<be-pose1:0.7>'; did you mean '<be-pose:pose1:0.7>'?"),
        ("<be-pose1>", "unknown avatar kind 'pose1' in '<be-pose1>'; did you mean '<be-pose:pose1>'?"),
        (
            "<be-facelucy:0.3>",
            "unknown avatar kind 'facelucy' in '<be-facelucy:0.3>'; did you mean '<be-face:lucy:0.3>'?",
        ),
        (
            "<be-weird1:0.7>",
            "unknown avatar kind 'weird1' in '<be-weird1:0.7>'; kinds are face, style, pose, lora, "
            "embedding (or ti, embed, emb)",
        ),
        ("<be-face:lucy:2>", "weight 2 in '<be-face:lucy:2>' is out of range: face weights go from 0 to 1.5"),
        ("<be-face:lucy:-0.1>", "weight -0.1 in '<be-face:lucy:-0.1>' is out of range: face weights go from 0 to 1.5"),
        ("<be-style:x:1.6>", "weight 1.6 in '<be-style:x:1.6>' is out of range: style weights go from 0 to 1.5"),
        ("<be-pose:x:2,5>", "weight 2.5 in '<be-pose:x:2,5>' is out of range: pose weights go from 0 to 2"),
        ("<be-lora:x:-3>", "weight -3 in '<be-lora:x:-3>' is out of range: lora weights go from -2 to 2"),
        ("<be-ti:x:-1>", "weight -1 in '<be-ti:x:-1>' is out of range: embedding weights go from 0 to 2"),
        ("a girl, <be-face:lucy", "unclosed avatar token '<be-face:lucy': add the closing '>'"),
        ("<be-face:lucy, a girl", "unclosed avatar token '<be-face:lucy': add the closing '>'"),
        ("<be-face:lucy\n>", "unclosed avatar token '<be-face:lucy': add the closing '>'"),
        ("<lora::1>", "malformed LoRA tag '<lora::1>': the name is missing"),
        ("<lora:toy:abc>", "malformed LoRA tag '<lora:toy:abc>': weight 'abc' is not a number"),
        ("<lora:toy:te=x>", "malformed LoRA tag '<lora:toy:te=x>': weight 'x' is not a number"),
    ],
)
def test_errors_quote_the_token(prompt, message):
    with pytest.raises(PromptSyntaxError) as info:
        parse(prompt)
    assert info.value.message == message
    assert info.value.status == 422


def test_every_error_reported_in_prompt_order():
    prompt = "<be-hat:x>, <be-face:ok:0.3>, <be-face:lucy:abc> <be-style:y:9>"
    tokens, _ = scan(prompt)
    assert [(t.kind, t.name) for t in tokens] == [(FACE, "ok")]
    with pytest.raises(PromptSyntaxError) as info:
        parse(prompt)
    assert info.value.message == (
        "unknown avatar kind 'hat' in '<be-hat:x>'; kinds are face, style, pose, lora, embedding (or ti, embed, emb); "
        "malformed avatar token '<be-face:lucy:abc>': weight 'abc' is not a number; "
        "weight 9 in '<be-style:y:9>' is out of range: style weights go from 0 to 1.5"
    )


def test_unclosed_tag_does_not_swallow_the_next():
    assert found("<lora:a <be-face:lucy:0.3>") == [(FACE, "lucy", 0.3)]
    with pytest.raises(PromptSyntaxError, match="unclosed avatar token '<be-face:x'"):
        parse("<be-face:x <lora:toy:1>")


@pytest.mark.parametrize(("weight", "text"), [(1.0, "1"), (0.4, "0.4"), (0.0, "0"), (-1.5, "-1.5"), (2, "2")])
def test_format_weight(weight, text):
    assert format_weight(weight) == text
