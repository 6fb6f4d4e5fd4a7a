"""Prompt tokens resolved to avatars: the text the encoder sees and the AvatarRefs the engine applies.

- `<be-...>` tokens are removed from the text, except embeddings, which are replaced in place by the
  avatar's internal token: `token` at weight 1, `(token:w)` otherwise (A1111 attention), nothing at 0.
- A1111 `<lora:...>` tags resolve LoRAs too; without a resolver they are removed silently (as A1111 does
  when the network is missing), but with one an unknown name is a 422 like any avatar.
- Other A1111 tags (`<hypernet:...>`) are removed silently.
- An avatar may appear once per prompt: `<be-face:lucy:0.4> ... <be-face:lucy:0.6>` is a PromptSyntaxError
  (which weight would win is not obvious); `<be-lora:toy>` and `<lora:toy>` count as the same LoRA.
- Negative prompts take embeddings only: face/style/pose/lora tokens there are a PromptSyntaxError, and
  A1111 tags are removed unresolved (A1111 ignores extra networks in the negative prompt).

Errors are reported all at once, in prompt order, joined with "; ": syntax problems (PromptSyntaxError)
first; only a prompt without them is resolved, and unknown names then raise one UnknownAvatarError.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Protocol

from pictale.core.errors import PromptSyntaxError, UnknownAvatarError
from pictale.core.types import AvatarKind, AvatarRef
from pictale.prompt.grammar import Token, TokenError, format_weight, join_errors, scan, splice

_NEGATIVE_OK = frozenset({AvatarKind.EMBEDDING})
_LISTED_NAMES = 10


class AvatarResolver(Protocol):
    """Finds the caller's avatars. `<be-...>` names come lower-cased, `<lora:...>` names as written."""

    def resolve(self, kind: AvatarKind, name: str, weight: float) -> AvatarRef | None: ...

    def names(self, kind: AvatarKind) -> list[str]: ...

    # Optional: `embedding_tokens() -> {typed token: embedding avatar name}`; typing a token applies it.


@dataclass(frozen=True)
class CompiledPrompt:
    text: str
    """What goes to the text encoder: tokens removed, embeddings substituted."""
    avatars: tuple[AvatarRef, ...] = ()
    """In token order, weight-0 ones included (the engine skips them; the infotext lists them)."""


def compile_prompt(prompt: str, resolver: AvatarResolver | None) -> CompiledPrompt:
    """Resolve the avatar tokens and LoRA tags of a prompt; raises PromptSyntaxError / UnknownAvatarError."""
    return _compile(prompt, resolver, negative=False)


def compile_negative(prompt: str, resolver: AvatarResolver | None) -> CompiledPrompt:
    """As `compile_prompt` for a negative prompt: embeddings only, A1111 tags stripped unresolved."""
    return _compile(prompt, resolver, negative=True)


def describe(avatars: tuple[AvatarRef, ...] | list[AvatarRef]) -> str:
    """The infotext "Avatars" value: `face:lucy:0.4, style:cartoon1:0.7, lora:toy:0.9`."""
    return ", ".join(f"{a.kind.value}:{a.name}:{format_weight(a.weight)}" for a in avatars)


def lora_hashes(avatars: tuple[AvatarRef, ...] | list[AvatarRef]) -> str | None:
    """A1111's "Lora hashes" value (`name: sha256[:12], ...`), or None without hashed LoRAs."""
    entries = [
        f"{a.name.replace(':', '').replace(',', '')}: {a.digest[:12]}"
        for a in avatars
        if a.kind is AvatarKind.LORA and a.digest
    ]
    return ", ".join(entries) or None


def _compile(prompt: str, resolver: AvatarResolver | None, *, negative: bool) -> CompiledPrompt:
    compiled = _compile_tokens(prompt, resolver, negative=negative)
    text, typed = _typed_embeddings(compiled.text, resolver)
    seen = {(a.kind, a.digest) for a in compiled.avatars}
    extra = tuple(a for a in typed if (a.kind, a.digest) not in seen)
    return CompiledPrompt(text, compiled.avatars + extra) if typed else compiled


def _typed_embeddings(text: str, resolver: AvatarResolver | None) -> tuple[str, list[AvatarRef]]:
    """A1111 applies an embedding wherever its name is typed as a word; pictale does the same with the token of
    each of the caller's embedding avatars (inside `(token:1.2)` too). Runs on the text after `<...>` tags
    were spliced out, so a tag's name is never taken for a typed token."""
    tokens = getattr(resolver, "embedding_tokens", None)
    tokens = tokens() if tokens is not None else {}
    if not tokens:
        return text, []
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w<>-])({alternatives})(?![\w<>-])")
    found: dict[str, AvatarRef] = {}

    def substitute(match: re.Match) -> str:
        typed = match.group(1)
        ref = found.get(typed) or resolver.resolve(AvatarKind.EMBEDDING, tokens[typed], 1.0)
        if ref is None:
            return typed
        found[typed] = ref
        return ref.token or ref.name

    return pattern.sub(substitute, text), list(found.values())


def _compile_tokens(prompt: str, resolver: AvatarResolver | None, *, negative: bool) -> CompiledPrompt:
    param = "negative_prompt" if negative else "prompt"
    tokens, errors = scan(prompt)
    if not tokens and not errors:
        return CompiledPrompt(prompt)
    errors += _usage_errors(tokens, negative=negative)
    if errors:
        raise PromptSyntaxError(join_errors(errors), param=param)

    edits: list[tuple[Token, str]] = []
    avatars: list[AvatarRef] = []
    unknown: list[str] = []
    unavailable: list[str] = []
    for token in tokens:
        if token.kind is None or (token.a1111 and (negative or resolver is None)):
            edits.append((token, ""))
            continue
        if resolver is None:
            unavailable.append(f"'{token.text}'")
            continue
        ref = resolver.resolve(token.kind, token.name, token.weight)
        if ref is None:
            unknown.append(_unknown_message(token, resolver.names(token.kind)))
            continue
        if ref.weight != token.weight:
            ref = dataclasses.replace(ref, weight=token.weight)
        avatars.append(ref)
        edits.append((token, _embedding_text(ref) if token.kind is AvatarKind.EMBEDDING else ""))

    if unavailable:
        raise UnknownAvatarError(
            f"avatars are not available on this server, so {', '.join(unavailable)} cannot be used", param=param
        )
    if unknown:
        raise UnknownAvatarError("; ".join(unknown), param=param)
    return CompiledPrompt(splice(prompt, edits), tuple(avatars))


def _usage_errors(tokens: list[Token], *, negative: bool) -> list[TokenError]:
    errors: list[TokenError] = []
    seen: dict[tuple[AvatarKind, str], Token] = {}
    for token in tokens:
        if token.kind is None or (token.a1111 and negative):
            continue
        if negative and token.kind not in _NEGATIVE_OK:
            errors.append(
                TokenError(
                    token.start,
                    f"'{token.text}' is in the negative prompt: {token.kind.value} avatars only work in the prompt, "
                    "not the negative prompt",
                )
            )
            continue
        key = (token.kind, token.name.lower())
        if key in seen:
            message = f"avatar {token.kind.value} '{key[1]}' is used twice: '{seen[key].text}' and '{token.text}'"
            errors.append(TokenError(token.start, message))
        else:
            seen[key] = token
    return errors


def _unknown_message(token: Token, names: list[str]) -> str:
    kind = token.kind.value
    head = f"unknown {kind} avatar '{token.name}' in '{token.text}'"
    if not names:
        return f"{head}; you have no {kind} avatars"
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(token.name.lower(), list(by_lower), n=len(by_lower))
    ratio = {c: difflib.SequenceMatcher(None, token.name.lower(), c).ratio() for c in close}
    close = sorted(close, key=lambda c: (-ratio[c], c))[:3]  # ties in name order, not difflib's reverse one
    if close:
        return f"{head}; did you mean {_either([by_lower[c] for c in close])}?"
    names = sorted(set(names))
    listed = ", ".join(f"'{n}'" for n in names[:_LISTED_NAMES])
    more = f" and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else ""
    return f"{head}; your {kind} avatars are {listed}{more}"


def _either(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _embedding_text(ref: AvatarRef) -> str:
    token = ref.token or ref.name
    if ref.weight == 0:
        return ""
    return token if ref.weight == 1 else f"({token}:{format_weight(ref.weight)})"
