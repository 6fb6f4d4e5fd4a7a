"""The limits every entry point applies the same way: seeds, sizes, finite numbers, prompt lengths.

One rule each, in one place. Wire schemas use the annotated types (`Seed`), the service checks the
finished GenerationSpec again with the same functions, so the CLI and every dialect say the same thing.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from pictale.core.errors import InvalidRequest
from pictale.core.images import parse_size

SEED_MAX = 2**32 - 1
"""Seeds are 32-bit, as A1111's (its clients send up to 2^32-1); -1 means a random one. Anything else is a
4xx naming the field: no silent folding, no overflow deep in torch."""
MIN_SIZE = 64
"""The smallest width or height (A1111's slider minimum; the latent is then 8x8)."""
SIZE_STEP = 8
"""Sizes are multiples of 8 (the VAE's factor). A1111-style fields are floored to it, "WxH" strings are checked."""
GUIDANCE_MAX = 30.0
"""The largest CFG and distilled-guidance scale (A1111's and Forge's slider maximum)."""
T5_TOKENS_MAX = 512
"""The longest T5 sequence the T5-family pipelines take (SD3, FLUX.1 dev)."""


def check_seed(value: Any, field: str = "seed") -> int:
    """An integer from -1 (random) to SEED_MAX, else InvalidRequest naming `field` and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= SEED_MAX:
        shown = value if isinstance(value, int) else repr(value)
        raise InvalidRequest(
            f"{field} must be a whole number from -1 (random) to {SEED_MAX} (got {shown})", param=field
        )
    return value


def check_finite(value: float, field: str) -> float:
    """NaN and infinities make garbage images (or crash deep in the sampler): refused by name."""
    if not math.isfinite(value):
        raise InvalidRequest(f"{field} must be a finite number (got {value})", param=field)
    return value


def check_dimension(value: int, field: str, maximum: int, flag: str) -> int:
    """One width or height: at least MIN_SIZE, at most `maximum` (the setting named by `flag`)."""
    if value < MIN_SIZE:
        raise InvalidRequest(f"{field} {value} is below the minimum of {MIN_SIZE}", param=field)
    if value > maximum:
        shown = value if value < 10**12 else f"{str(value)[:12]}..."
        raise InvalidRequest(f"{field} {shown} is above the maximum of {maximum} (set {flag})", param=field)
    return value


def check_size_text(text: str, *, max_width: int, max_height: int, field: str = "size") -> tuple[int, int] | None:
    """A "WIDTHxHEIGHT" string, validated (never silently rounded): multiples of 8 within the limits.

    None when `text` does not look like a size at all (the caller names its own expected forms)."""
    size = parse_size(text)
    if size is None:
        return None
    width, height = size
    shown = f"{width}x{height}" if max(width, height) < 10**12 else "that size"
    if width < MIN_SIZE or height < MIN_SIZE:
        raise InvalidRequest(f"{field} {shown} is below the minimum of {MIN_SIZE}x{MIN_SIZE}", param=field)
    if width > max_width or height > max_height:
        raise InvalidRequest(
            f"{field} {shown} is above the maximum of {max_width}x{max_height} (set --max-width/--max-height)",
            param=field,
        )
    if width % SIZE_STEP or height % SIZE_STEP:
        raise InvalidRequest(
            f"{field} {shown}: width and height must be multiples of {SIZE_STEP} "
            f"(e.g. {width // SIZE_STEP * SIZE_STEP}x{height // SIZE_STEP * SIZE_STEP})",
            param=field,
        )
    return width, height


def check_text(value: str, field: str, limit: int, setting: str = "--max-prompt-chars") -> str:
    """A prompt-like text no longer than `limit` characters (a 1 MB prompt would hold the worker)."""
    if len(value) > limit:
        raise InvalidRequest(
            f"{field} is {len(value)} characters, more than the limit of {limit} (set {setting})", param=field
        )
    return value


def _seed_field(value: int, info: ValidationInfo) -> int:
    return check_seed(value, info.field_name or "seed")


Seed = Annotated[int, AfterValidator(_seed_field)]
"""A wire field holding a seed: the same rule and message as the service's check."""
