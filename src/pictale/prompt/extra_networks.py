"""A1111 extra-network tags (`<lora:name:0.8>`, `<hypernet:x:1>`): found, and removed before encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A1111's pattern: a word, a colon, then anything up to the closing bracket. Unlike A1111 a tag cannot
# contain '<', so an unclosed tag does not swallow the next one.
TAG = re.compile(r"<(\w+):([^<>]+)>")


@dataclass(frozen=True)
class ExtraNetwork:
    kind: str
    name: str
    args: tuple[str, ...]
    text: str
    """The tag as written, for error messages."""


def extract(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """Return the prompt without its tags (whitespace and commas tidied) and the tags found."""
    found: list[ExtraNetwork] = []

    def take(m: re.Match) -> str:
        parts = m.group(2).split(":")
        found.append(ExtraNetwork(m.group(1), parts[0].strip(), tuple(p.strip() for p in parts[1:]), m.group(0)))
        return ""

    return tidy(TAG.sub(take, prompt)), found


def tidy(text: str) -> str:
    """Collapse the doubled spaces and commas a removed tag leaves behind."""
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    text = re.sub(r" +([,\n])", r"\1", text)
    text = re.sub(r"^[\s,]+|[\s,]+$", "", text)
    return text
