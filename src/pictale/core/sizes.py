"""`WIDTHxHEIGHT[,WxH...]` lists (e.g. `--compile-sizes 512x512,768x768`), parsed once for settings and engine."""

from __future__ import annotations


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """[(width, height), ...] in the given order, duplicates dropped; ValueError names the entry that is wrong."""
    sizes: list[tuple[int, int]] = []
    for part in text.split(","):
        item = part.strip().lower()
        if not item:
            continue
        width, sep, height = item.partition("x")
        if not sep or not width.strip().isdigit() or not height.strip().isdigit():
            raise ValueError(f"size {part.strip()!r} must be WIDTHxHEIGHT, e.g. 512x512")
        size = (int(width), int(height))
        if min(size) < 8 or size[0] % 8 or size[1] % 8:
            raise ValueError(f"size {part.strip()!r}: width and height must be multiples of 8 (at least 8)")
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise ValueError("name at least one size, e.g. 512x512")
    return sizes


def format_sizes(sizes: list[tuple[int, int]]) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sizes)
