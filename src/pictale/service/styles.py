"""A1111 prompt styles (styles.csv: name, prompt, negative_prompt)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from pictale.core.types import GenerationSpec


class StyleStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="", encoding="utf-8-sig") as fh:
            return [
                {
                    "name": row.get("name") or "",
                    "prompt": row.get("prompt") or "",
                    "negative_prompt": row.get("negative_prompt") or "",
                }
                for row in csv.DictReader(fh)
                if row.get("name")
            ]

    def apply(self, spec: GenerationSpec) -> GenerationSpec:
        """A1111 semantics: `{prompt}` in a style is replaced by the prompt, else the style is appended."""
        if not spec.styles:
            return spec
        by_name = {s["name"]: s for s in self.all()}
        prompt, negative = spec.prompt, spec.negative_prompt
        for name in spec.styles:
            style = by_name.get(name)
            if style is None:
                continue  # unknown style names are no-ops, as in A1111
            prompt = _merge(style["prompt"], prompt)
            negative = _merge(style["negative_prompt"], negative)
        return replace(spec, prompt=prompt, negative_prompt=negative)


def _merge(style: str, text: str) -> str:
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return f"{text}, {style}" if text else style
