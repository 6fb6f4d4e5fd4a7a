"""A1111 attention syntax: `(word)`, `(word:1.3)`, `[word]`, escapes and `BREAK`. Pure Python.

Behaviour follows AUTOMATIC1111's `parse_prompt_attention` (modules/prompt_parser.py), including its
quirks: unbalanced brackets are closed at the end, an unmatched `)` or `]` and a `:1.3)` outside round
brackets stay literal text, a lone backslash is dropped, and runs of equal weight are merged. Deliberate
difference: a `BREAK` inside brackets stays a BREAK (A1111 multiplies its -1 marker and then encodes the
word "BREAK" with a negative weight). Prompt editing `[a:b:0.5]` and alternation `[a|b]` are not scheduled
here: they come out as literal text inside a `[...]` (weight /1.1).
"""

from __future__ import annotations

import re

BREAK = "BREAK"
BREAK_WEIGHT = -1.0

_ROUND = 1.1
_SQUARE = 1 / 1.1  # multiplied, not divided, so weights match A1111 bit for bit (e.g. [(x)] == 1.0)

# One lexeme at a time; the alternatives are tried in order.
_LEXEME = re.compile(
    r"""
    \\[()\[\]\\]            # escaped bracket or backslash -> that character
    | \\                    # lone backslash -> dropped
    | [(\[]                 # opening bracket
    | :([+-]?[.\d]+)\)      # explicit weight closing a round bracket
    | [)\]]                 # closing bracket
    | [^\\()\[\]:]+         # plain text
    | :                     # a colon that is not a weight
    """,
    re.X,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split `text` into (fragment, weight) pairs; a BREAK is the pair ("BREAK", -1.0)."""
    parts: list[list] = []  # [text, weight]; BREAK markers are never multiplied
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            if not _is_break(part):
                part[1] *= factor

    def add_plain(chunk: str) -> None:
        for i, piece in enumerate(_BREAK_SPLIT.split(chunk)):
            if i > 0:
                parts.append([BREAK, BREAK_WEIGHT])
            parts.append([piece, 1.0])

    for match in _LEXEME.finditer(text):
        lexeme, weight = match.group(0), match.group(1)
        if lexeme.startswith("\\"):
            parts.append([lexeme[1:], 1.0])
        elif lexeme == "(":
            round_open.append(len(parts))
        elif lexeme == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open and _is_float(weight):
            scale(round_open.pop(), float(weight))
        elif lexeme == ")" and round_open:
            scale(round_open.pop(), _ROUND)
        elif lexeme == "]" and square_open:
            scale(square_open.pop(), _SQUARE)
        else:
            add_plain(lexeme)

    for start in round_open:
        scale(start, _ROUND)
    for start in square_open:
        scale(start, _SQUARE)

    if not parts:
        return [("", 1.0)]
    merged: list[list] = [parts[0]]
    for part in parts[1:]:
        last = merged[-1]
        if part[1] == last[1] and not _is_break(part) and not _is_break(last):
            last[0] += part[0]
        else:
            merged.append(part)
    return [(fragment, weight) for fragment, weight in merged]


def strip_attention(text: str) -> str:
    """The prompt as plain words: brackets, weights and BREAKs removed, whitespace collapsed."""
    fragments = parse_prompt_attention(text)
    return " ".join("".join(" " if _is_break(f) else f[0] for f in fragments).split())


def is_break(fragment: tuple[str, float]) -> bool:
    """True for the BREAK marker produced by `parse_prompt_attention`."""
    return _is_break(fragment)


def _is_break(fragment) -> bool:
    return fragment[0] == BREAK and fragment[1] == BREAK_WEIGHT


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
