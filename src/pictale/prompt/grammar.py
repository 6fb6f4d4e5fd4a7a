"""Avatar tokens in a prompt: `<be-face:lucy:0.4>`, and A1111's `<lora:toy:0.9>`. Pure Python.

Grammar (case-insensitive; whitespace around `<`, `>` and each `:` is ignored)::

    <be-KIND:NAME>            the kind's default weight
    <be-KIND:NAME:WEIGHT>

    KIND    face | style | pose | lora | embedding   (`ti`, `embed` and `emb` mean embedding)
    NAME    letters, digits, `_`, `.`, `-`; matched case-insensitively (passed on lower-cased)
    WEIGHT  a decimal such as `0.4`, `-1`, `.5`; a comma works as the decimal point too (`0,4` and
            `0, 4`), because SillyTavern's processReply turns `.` into `,` and then `,` into `, `

    kind       default  range          what the weight is
    face       0.4      0 to 1.5       IP-Adapter scale of the face adapter
    style      0.5      0 to 1.5       IP-Adapter scale of the style adapter
    pose       1.0      0 to 2         ControlNet conditioning scale
    lora       1.0      -2 to 2        LoRA scale
    embedding  1.0      0 to 2         attention weight of the embedding's token

Tokens may sit anywhere: next to commas, words, brackets or other tokens, on their own line. Weight 0 is
allowed everywhere and means "exactly as if the token were absent".

A1111 extra-network tags use A1111's own pattern (`extra_networks.TAG`): `<lora:NAME>`, `<lora:NAME:TE>`,
`<lora:NAME:TE:UNET>` and named `te=`/`unet=` arguments (`<lyco:...>` is the same). They resolve LoRA avatars
and LoRA files alike; the weight is the text-encoder one (A1111's first number, default 1.0; no range check,
as in A1111), and NAME is passed as written. Any other tag type (`<hypernet:...>`) is removed silently, as
A1111 skips networks it does not know.

Removing a token leaves the text around it clean: the separators on both sides of the gap collapse into one
(", " if there was a comma on either side, else " "), and a gap at the start or end of the text or of a line
takes its commas with it; a line that held only tokens disappears. Text away from tokens is left untouched.
So "a, <be-face:x>, b" -> "a, b", "<be-face:x> a girl" -> "a girl", "a girl,<be-lora:t:1>" -> "a girl".

Errors are PromptSyntaxError (422), each quoting the token exactly as written; every problem in the prompt
is reported at once, in prompt order, joined with "; ":

    malformed avatar token '<be-face:lucy:abc>': weight 'abc' is not a number
    unknown avatar kind 'hat' in '<be-hat:x:1>'; kinds are face, style, pose, lora, embedding (or ti, embed, emb)
    unknown avatar kind 'pose1' in '<be-pose1:0.7>'; did you mean '<be-pose:pose1:0.7>'?
    weight 2 in '<be-face:lucy:2>' is out of range: face weights go from 0 to 1.5
    unclosed avatar token '<be-face:lucy': add the closing '>'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pictale.core.errors import PromptSyntaxError
from pictale.core.types import AvatarKind
from pictale.prompt.extra_networks import TAG

KINDS: dict[str, AvatarKind] = {kind.value: kind for kind in AvatarKind} | {
    "ti": AvatarKind.EMBEDDING,
    "embed": AvatarKind.EMBEDDING,
    "emb": AvatarKind.EMBEDDING,
}
DEFAULT_WEIGHTS: dict[AvatarKind, float] = {
    AvatarKind.FACE: 0.4,
    AvatarKind.STYLE: 0.5,
    AvatarKind.POSE: 1.0,
    AvatarKind.LORA: 1.0,
    AvatarKind.EMBEDDING: 1.0,
}
WEIGHT_RANGES: dict[AvatarKind, tuple[float, float]] = {
    AvatarKind.FACE: (0.0, 1.5),
    AvatarKind.STYLE: (0.0, 1.5),
    AvatarKind.POSE: (0.0, 2.0),
    AvatarKind.LORA: (-2.0, 2.0),
    AvatarKind.EMBEDDING: (0.0, 2.0),
}
A1111_LORA_TYPES = frozenset({"lora", "lyco"})

_KIND_LIST = "face, style, pose, lora, embedding (or ti, embed, emb)"
# Closed be-token, else an unclosed one (runs to the line's end or the next '<'), else an A1111 tag.
_TOKEN = re.compile(rf"(?P<be><\s*be-[^<>\n]*>)|(?P<open><\s*be-[^<>\n]*)|(?P<tag>{TAG.pattern})", re.I)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_WEIGHT = re.compile(r"[+-]?(?:\d+(?:\.\d*|\s*,\s*\d+)?|[.,]\d+)")
_OPEN_BRACKETS = "([{"
_CLOSE_BRACKETS = ")]}"


@dataclass(frozen=True)
class Token:
    """One tag found in a prompt, with its span; `kind` None is an A1111 network pictale ignores."""

    text: str
    """The tag exactly as written, for messages."""
    start: int
    end: int
    kind: AvatarKind | None
    name: str = ""
    weight: float = 1.0
    a1111: bool = False
    """True for `<lora:...>`-style tags, False for `<be-...>` tokens."""


@dataclass(frozen=True)
class TokenError:
    start: int
    message: str


def parse(prompt: str) -> list[Token]:
    """The tokens of `prompt` in order; raises PromptSyntaxError listing every malformed one."""
    tokens, errors = scan(prompt)
    if errors:
        raise PromptSyntaxError(join_errors(errors), param="prompt")
    return tokens


def scan(prompt: str) -> tuple[list[Token], list[TokenError]]:
    """The well-formed tokens of `prompt` and the errors of the others, both in prompt order."""
    tokens: list[Token] = []
    errors: list[TokenError] = []
    for m in _TOKEN.finditer(prompt):
        try:
            if m.group("be"):
                tokens.append(_be_token(m.group("be"), m.start(), m.end()))
            elif m.group("open"):
                quoted = re.match(r"<\s*be-[^\s,<>]*", m.group("open"))
                raise _Malformed(f"unclosed avatar token '{quoted.group(0)}': add the closing '>'")
            else:
                tokens.append(_a1111_tag(m.group("tag"), m.start(), m.end()))
        except _Malformed as exc:
            errors.append(TokenError(m.start(), str(exc)))
    return tokens, errors


def join_errors(errors: Sequence[TokenError]) -> str:
    return "; ".join(e.message for e in sorted(errors, key=lambda e: e.start))


def splice(prompt: str, edits: Sequence[tuple[Token, str]]) -> str:
    """Replace each token by its text ("" removes it and tidies the separators around the gap)."""
    pieces: list[str | None] = []  # text between tokens; None marks a removed token
    pos = 0
    for token, replacement in sorted(edits, key=lambda e: e[0].start):
        pieces += [prompt[pos : token.start], replacement or None]
        pos = token.end
    pieces.append(prompt[pos:])

    out = pieces[0] or ""
    gap = False
    for i, piece in enumerate(pieces[1:], start=1):
        if piece is None:
            gap = True
        elif not gap:
            out += piece
        elif i + 1 < len(pieces) and pieces[i + 1] is None and not piece.strip(" \t,"):
            continue  # only separators between two removed tokens: one gap
        else:
            out, gap = _close_gap(out, piece), False
    return out


def format_weight(weight: float) -> str:
    """Shortest decimal for a weight: 1.0 -> "1", 0.40 -> "0.4"."""
    text = repr(float(weight))
    return text[:-2] if text.endswith(".0") else text


def _close_gap(left: str, right: str) -> str:
    core_left, core_right = left.rstrip(" \t,"), right.lstrip(" \t,")
    comma = "," in left[len(core_left) :] or "," in right[: len(right) - len(core_right)]
    at_line_start = core_left == "" or core_left.endswith("\n")
    at_line_end = core_right == "" or core_right.startswith(("\n", "\r\n"))
    if at_line_start and at_line_end:
        if core_left == "":
            return core_right.lstrip()
        if core_right == "":
            return core_left.rstrip()
        return core_left + core_right.removeprefix("\r").removeprefix("\n")  # the line held only tokens
    if at_line_start or at_line_end:
        return core_left + core_right
    if core_left[-1] in _OPEN_BRACKETS or core_right[0] in _CLOSE_BRACKETS:
        return core_left + core_right
    if comma:
        return f"{core_left}, {core_right}"
    return core_left + ("" if core_right[0] == ":" else " ") + core_right


class _Malformed(Exception):
    pass


def _be_token(text: str, start: int, end: int) -> Token:
    body = text.strip()[1:-1].strip()[len("be-") :]
    parts = [p.strip() for p in body.split(":")]
    word = parts[0].lower()
    kind = KINDS.get(word)
    if kind is None:
        raise _Malformed(_unknown_kind(text, word, parts[1:]))
    usage = f"write <be-{word}:name> or <be-{word}:name:weight>"
    if len(parts) < 2 or not parts[1]:
        raise _Malformed(f"malformed avatar token '{text}': the name is missing; {usage}")
    if len(parts) > 3:
        raise _Malformed(f"malformed avatar token '{text}': too many ':' parts; {usage}")
    name = parts[1]
    if not _NAME.fullmatch(name):
        raise _Malformed(
            f"malformed avatar token '{text}': name '{name}' may only contain letters, digits, '_', '.' and '-'"
        )
    weight = DEFAULT_WEIGHTS[kind] if len(parts) == 2 else _weight(text, parts[2], "avatar token")
    low, high = WEIGHT_RANGES[kind]
    if not low <= weight <= high:
        raise _Malformed(
            f"weight {format_weight(weight)} in '{text}' is out of range: "
            f"{kind.value} weights go from {format_weight(low)} to {format_weight(high)}"
        )
    return Token(text, start, end, kind, name.lower(), weight)


def _unknown_kind(text: str, word: str, rest: list[str]) -> str:
    if not word:
        return f"malformed avatar token '{text}': the kind is missing; kinds are {_KIND_LIST}"
    message = f"unknown avatar kind '{word}' in '{text}'; kinds are {_KIND_LIST}"
    # Block Entropy's own docs write <be-pose1:0.7> for the pose avatar "pose1".
    prefix = next((k for k in sorted(KINDS, key=len, reverse=True) if word.startswith(k) and word != k), None)
    if prefix and _NAME.fullmatch(word) and len(rest) <= 1 and all(_WEIGHT.fullmatch(r) for r in rest):
        name = word[len(prefix) :].lstrip("-_.")
        name = word if not name or name.isdigit() else name  # "pose1" is a name; "facelucy" means "lucy"
        suggestion = ":".join([f"<be-{KINDS[prefix].value}", name, *rest]) + ">"
        message = f"unknown avatar kind '{word}' in '{text}'; did you mean '{suggestion}'?"
    return message


def _a1111_tag(text: str, start: int, end: int) -> Token:
    m = TAG.fullmatch(text)
    network = m.group(1).lower()
    if network not in A1111_LORA_TYPES:
        return Token(text, start, end, None, a1111=True)
    name, *args = (p.strip() for p in m.group(2).split(":"))
    if not name:
        raise _Malformed(f"malformed LoRA tag '{text}': the name is missing")
    positional = [a for a in args if "=" not in a]
    named = dict(tuple(p.strip() for p in a.split("=", 1)) for a in args if "=" in a)
    te = named.get("te", positional[0] if positional else None)
    weight = 1.0 if te is None else _weight(text, te, "LoRA tag")
    return Token(text, start, end, AvatarKind.LORA, name, weight, a1111=True)


def _weight(text: str, value: str, what: str) -> float:
    if not value:
        raise _Malformed(f"malformed {what} '{text}': the weight after ':' is empty")
    if not _WEIGHT.fullmatch(value):
        raise _Malformed(f"malformed {what} '{text}': weight '{value}' is not a number")
    return float(re.sub(r"\s*,\s*", ".", value))
