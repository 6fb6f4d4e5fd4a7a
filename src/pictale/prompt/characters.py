"""`<be-char:NAME>` in a prompt: a story character expanded to its description and avatar tokens. Pure Python.

Grammar (case-insensitive; whitespace around `<`, `>` and `:` is ignored, as for avatar tokens)::

    <be-char:NAME>          (also <be-character:NAME>)
    NAME    letters, digits, `_`, `.`, `-`; matched case-insensitively

Expansion runs before the avatar compiler (`prompt.compile`), which then resolves the avatar tokens the
character brought along, so a character's avatars behave exactly as if the prompt had spelled them out:

- The token is replaced in place by the character's `prefix` (description, then its avatar tokens); a
  character with neither is removed, with the separators around the gap tidied as for avatar tokens.
- The character's negative prompt is appended to the request's negative prompt, comma-joined; parts the
  negative prompt already has (compared trimmed and case-insensitively) are not added again.
- Several characters in one prompt each expand. The same character twice expands once, where it first
  appears; later tokens for it are removed (an LLM-written page may well name a character twice, and
  spelling its avatars out twice would be a "used twice" error from the avatar compiler).
- Two characters may share an avatar (a book-wide style LoRA): the identical token is kept once. At
  different weights it is a PromptSyntaxError, since which weight would win is not obvious.
- Characters do not nest and take no weight: `<be-char:x:0.5>` is a PromptSyntaxError quoting the token,
  and `<be-char:...>` in a negative prompt is one too (a character is someone in the picture).

Errors are reported all at once, in prompt order, joined with "; ": syntax problems (PromptSyntaxError)
first; only a prompt without them is looked up, and unknown names then raise one UnknownAvatarError:

    malformed character token '<be-char:sasha:0.5>': characters take no weight; write <be-char:name>
    unknown character 'sahsa' in '<be-char:sahsa>'; did you mean 'sasha'?
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from typing import Protocol

from pictale.core.errors import PromptSyntaxError, UnknownAvatarError
from pictale.core.types import Character
from pictale.prompt.grammar import Token, TokenError, format_weight, join_errors, scan, splice

CHARACTER_KINDS = frozenset({"char", "character"})
_BE_TOKEN = re.compile(r"<\s*be-[^<>\n]*>", re.I)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_USAGE = "write <be-char:name>"
_LISTED_NAMES = 10
_OPENERS, _CLOSERS = "([{<", ")]}>"


class CharacterSource(Protocol):
    """The caller's characters: `get` is case-insensitive; `names` feeds "did you mean"."""

    def get(self, name: str) -> Character | None: ...

    def names(self) -> list[str]: ...


@dataclass(frozen=True)
class CharacterToken:
    text: str
    """The token exactly as written, for messages."""
    start: int
    end: int
    name: str


@dataclass(frozen=True)
class Expansion:
    prompt: str
    """The prompt with every character token replaced (avatar tokens still in it, for the avatar compiler)."""
    negative_prompt: str
    """The request's negative prompt with the characters' negative prompts appended."""
    characters: tuple[Character, ...] = ()
    """The characters used, in order of first appearance, each once."""


def find_characters(prompt: str) -> tuple[list[CharacterToken], list[TokenError]]:
    """The well-formed character tokens of `prompt` and the errors of malformed ones, in prompt order."""
    tokens: list[CharacterToken] = []
    errors: list[TokenError] = []
    for m in _BE_TOKEN.finditer(prompt):
        text = m.group(0)
        parts = [p.strip() for p in text.strip()[1:-1].strip()[len("be-") :].split(":")]
        if parts[0].lower() not in CHARACTER_KINDS:
            continue  # an avatar token: the avatar grammar's business
        if len(parts) < 2 or not parts[1]:
            errors.append(TokenError(m.start(), f"malformed character token '{text}': the name is missing; {_USAGE}"))
        elif len(parts) > 2:
            message = f"malformed character token '{text}': characters take no weight; {_USAGE}"
            errors.append(TokenError(m.start(), message))
        elif not _NAME.fullmatch(parts[1]):
            message = (
                f"malformed character token '{text}': name '{parts[1]}' may only contain letters, digits, "
                "'_', '.' and '-'"
            )
            errors.append(TokenError(m.start(), message))
        else:
            tokens.append(CharacterToken(text, m.start(), m.end(), parts[1]))
    return tokens, errors


def has_characters(prompt: str) -> bool:
    """True when the prompt has a character token, well-formed or not."""
    tokens, errors = find_characters(prompt)
    return bool(tokens or errors)


def expand(prompt: str, negative_prompt: str, source: CharacterSource | None, *, param: str = "prompt") -> Expansion:
    """Replace the character tokens of `prompt`; raises PromptSyntaxError / UnknownAvatarError (422)."""
    tokens, errors = find_characters(prompt)
    if not tokens and not errors:
        return Expansion(prompt, negative_prompt)
    if errors:
        raise PromptSyntaxError(join_errors(errors), param=param)
    if source is None:
        quoted = ", ".join(f"'{t.text}'" for t in tokens)
        raise UnknownAvatarError(
            f"characters are not available on this server, so {quoted} cannot be used", param=param
        )

    found: dict[str, Character] = {}
    unknown: list[str] = []
    for token in tokens:
        key = token.name.lower()
        if key in found:
            continue
        character = source.get(token.name)
        if character is None:
            unknown.append(_unknown_message(token, source.names()))
        else:
            found[key] = character
    if unknown:
        raise UnknownAvatarError("; ".join(dict.fromkeys(unknown)), param=param)

    prefixes = _prefixes(list(found.values()), param)
    edits: list[tuple[Token, str]] = []
    done: set[str] = set()
    for token in tokens:
        key = token.name.lower()
        edits.append((Token(token.text, token.start, token.end, None), "" if key in done else prefixes[key]))
        done.add(key)
    characters = tuple(found.values())
    return Expansion(splice(prompt, edits), add_negatives(negative_prompt, characters), characters)


def check_negative(negative_prompt: str, *, param: str = "negative_prompt") -> None:
    """A character token in a negative prompt is a PromptSyntaxError (characters only work in the prompt)."""
    tokens, errors = find_characters(negative_prompt)
    where = "characters only work in the prompt, not the negative prompt"
    errors += [TokenError(t.start, f"'{t.text}' is in the negative prompt: {where}") for t in tokens]
    if errors:
        raise PromptSyntaxError(join_errors(errors), param=param)


def add_negatives(negative_prompt: str, characters: tuple[Character, ...] | list[Character]) -> str:
    """`negative_prompt` plus each character's negative prompt parts it does not have yet, comma-joined."""
    have = {_part_key(p) for p in split_parts(negative_prompt)}
    added: list[str] = []
    for character in characters:
        for part in split_parts(character.negative_prompt):
            if _part_key(part) not in have:
                have.add(_part_key(part))
                added.append(part)
    if not added:
        return negative_prompt
    head = negative_prompt.rstrip(" \t\n,")
    return ", ".join([head, *added]) if head else ", ".join(added)


def split_parts(text: str) -> list[str]:
    """Top-level comma-separated parts, trimmed: commas inside `(a, b:1.2)` or `<...>` do not split."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _part_key(part: str) -> str:
    return " ".join(part.lower().split())


def _prefixes(characters: list[Character], param: str) -> dict[str, str]:
    """Each character's prefix, minus avatar tokens an earlier character already brought at the same weight."""
    seen: dict[tuple, tuple[str, float]] = {}  # (kind, name) -> (character, weight)
    prefixes: dict[str, str] = {}
    problems: list[str] = []
    for character in characters:
        avatar_tokens, _ = scan(character.avatars)  # validated when stored; names resolve later
        drop: list[tuple[Token, str]] = []
        for t in avatar_tokens:
            if t.kind is None:
                continue
            key = (t.kind, t.name.lower())
            if key not in seen:
                seen[key] = (character.name, t.weight)
                continue
            first, weight = seen[key]
            if weight == t.weight:
                drop.append((t, ""))
            else:
                problems.append(
                    f"characters '{first}' and '{character.name}' both call {t.kind.value} avatar '{t.name}', "
                    f"at different weights ({format_weight(weight)} and {format_weight(t.weight)})"
                )
        avatars = splice(character.avatars, drop) if drop else character.avatars
        prefixes[character.name.lower()] = replace(character, avatars=avatars).prefix
    if problems:
        raise PromptSyntaxError("; ".join(problems), param=param)
    return prefixes


def _unknown_message(token: CharacterToken, names: list[str]) -> str:
    head = f"unknown character '{token.name}' in '{token.text}'"
    if not names:
        return f"{head}; you have no characters"
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(token.name.lower(), list(by_lower), n=len(by_lower))
    ratio = {c: difflib.SequenceMatcher(None, token.name.lower(), c).ratio() for c in close}
    close = sorted(close, key=lambda c: (-ratio[c], c))[:3]
    if close:
        quoted = [f"'{by_lower[c]}'" for c in close]
        either = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        return f"{head}; did you mean {either}?"
    names = sorted(set(names), key=str.lower)
    listed = ", ".join(f"'{n}'" for n in names[:_LISTED_NAMES])
    more = f" and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else ""
    return f"{head}; your characters are {listed}{more}"
