"""A1111 attention syntax: the cases of A1111's own docstring plus nesting, escapes, BREAK and edge cases."""

from __future__ import annotations

import pytest

from pictale.prompt.attention import is_break, parse_prompt_attention, strip_attention


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("a (very beautiful:1.3) girl", [("a ", 1.0), ("very beautiful", 1.3), (" girl", 1.0)]),
    ],
)
def test_a1111_docstring_examples(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_nesting_multiplies_per_level() -> None:
    assert parse_prompt_attention("((a))") == [("a", pytest.approx(1.21))]
    assert parse_prompt_attention("(((a)))") == [("a", pytest.approx(1.331))]
    assert parse_prompt_attention("[[a]]") == [("a", pytest.approx(1 / 1.21))]
    assert parse_prompt_attention("([a])") == [("a", 1.0)]


def test_explicit_weights() -> None:
    assert parse_prompt_attention("(a:1.5)") == [("a", 1.5)]
    assert parse_prompt_attention("(a:0)") == [("a", 0.0)]
    assert parse_prompt_attention("(a:-0.5) b") == [("a", -0.5), (" b", 1.0)]
    assert parse_prompt_attention("((a:2))") == [("a", pytest.approx(2.2))]
    assert parse_prompt_attention("(a: 2)") == [("a: 2", 1.1)]  # A1111: no space allowed before the number


def test_escapes_are_literal() -> None:
    assert parse_prompt_attention("\\(a\\) \\[b\\]") == [("(a) [b]", 1.0)]
    assert parse_prompt_attention("(\\(a\\))") == [("(a)", 1.1)]
    assert parse_prompt_attention("a \\\\ b") == [("a \\ b", 1.0)]
    assert parse_prompt_attention("a \\ b") == [("a  b", 1.0)]  # A1111 drops a lone backslash


def test_unbalanced_brackets() -> None:
    assert parse_prompt_attention("a (b [c") == [("a ", 1.0), ("b ", 1.1), ("c", pytest.approx(1.0))]
    assert parse_prompt_attention("a) b]") == [("a) b]", 1.0)]
    assert parse_prompt_attention(":1.3)") == [(":1.3)", 1.0)]
    assert parse_prompt_attention("[a:1.3)") == [("a:1.3)", 1 / 1.1)]


def test_break() -> None:
    assert parse_prompt_attention("a BREAK b") == [("a", 1.0), ("BREAK", -1), ("b", 1.0)]
    assert parse_prompt_attention("a, BREAK, b") == [("a,", 1.0), ("BREAK", -1), (", b", 1.0)]
    assert parse_prompt_attention("a break b") == [("a break b", 1.0)]  # upper-case only
    assert parse_prompt_attention("aBREAK b") == [("aBREAK b", 1.0)]  # whole word only
    parsed = parse_prompt_attention("(a BREAK b)")  # stays a marker inside brackets (A1111 would make it -1.1)
    assert parsed == [("a", 1.1), ("BREAK", -1), ("b", 1.1)]
    assert [is_break(f) for f in parsed] == [False, True, False]
    assert sum(is_break(f) for f in parse_prompt_attention("BREAK BREAK")) == 2


def test_empty_and_whitespace() -> None:
    assert parse_prompt_attention("") == [("", 1.0)]
    assert parse_prompt_attention("()") == [("", 1.0)]
    assert parse_prompt_attention("   ") == [("   ", 1.0)]


@pytest.mark.parametrize(
    "text",
    ["[a:b:0.5]", "[a|b|c]", "[(a:2):3]", "((a][:b:c [d:3]", "(x:..)", "(:)", "::", "\\", "(((", "]])"],
)
def test_never_raises(text: str) -> None:
    parsed = parse_prompt_attention(text)
    assert parsed and all(isinstance(t, str) and isinstance(w, float) for t, w in parsed)


def test_editing_and_alternation_are_literal_for_now() -> None:
    assert parse_prompt_attention("[a:b:0.5]") == [("a:b:0.5", 1 / 1.1)]
    assert parse_prompt_attention("x [a|b]") == [("x ", 1.0), ("a|b", 1 / 1.1)]


def test_strip_attention() -> None:
    assert strip_attention("a (((house:1.3)) [on] a (hill:0.5), sun") == "a house on a hill, sun"
    assert strip_attention("(a)b BREAK  c \\(d\\)") == "ab c (d)"
    assert strip_attention("") == ""
